// Package cli is the fabric admin command line: key, activate, add-nodes,
// status and watch. `fabric activate` leaves an admin bundle (admin.json,
// the admin's keys and a wg-quick config) in the admin directory, and every
// later command reads it and authenticates to the coordinator with the
// admin key, pinning the coordinator's TLS certificate.
package cli
