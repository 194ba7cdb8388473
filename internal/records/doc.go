// Package records holds the cluster's record types: the cluster, its
// peers, their service records and the cluster's SSH users, as the
// coordinator's registry stores them and as the APIs carry them. It imports
// nothing of fabric, so every layer (core, the APIs, the CLI, the test bed)
// can share them.
package records
