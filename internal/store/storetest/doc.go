// Package storetest is the conformance suite for store.Store
// implementations: every implementation's tests call Run with a function
// that opens a fresh, empty store.
package storetest
