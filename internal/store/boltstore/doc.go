// Package boltstore is the store.Store of a peer's state directory: one
// bbolt file (mode 0600) whose transactions are bbolt's, so a crash at any
// point leaves the last committed state. A second process opening the same
// file gets ErrLocked after a timeout instead of waiting forever.
package boltstore
