// Package store is fabric's small transactional key/value store: string
// keys such as "registry/peers/203.0.113.5", byte values, prefix scans in key
// order, and transactions that commit only when their function succeeds.
//
// Package boltstore keeps the data in a bbolt file in the state directory
// (the default); Mem keeps it in memory for unit tests with the same
// transaction semantics. Package storetest holds the conformance tests every
// implementation must pass.
package store
