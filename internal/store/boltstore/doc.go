// Package boltstore is the store.Store of a peer's state directory: one
// bbolt file (mode 0600) whose transactions are bbolt's, so a crash at any
// point leaves the last committed state. A second process opening the same
// file gets ErrLocked after a timeout instead of waiting forever.
//
// The file holds private keys and a peer's role, so Open refuses one that
// group or others may access (ErrLooseMode) and an empty one (ErrEmpty:
// bbolt would make it a new store), and reads every page of the file
// (ErrDamaged; some 0.1 s for 100 MB here). bbolt panics when a transaction meets a damaged page; the
// store recovers that panic into ErrDamaged, for that transaction and
// every later one, so a damaged file never takes the process down.
package boltstore
