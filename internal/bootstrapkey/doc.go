// Package bootstrapkey makes, stores and loads the cluster's shared
// bootstrap key: 32 random bytes that every fabricd of a cluster is started
// with and that each pubapi call proves knowledge of before activation. The
// key is stored as one line of standard base64 in a file only its owner may
// read. Errors never contain the key or the file's content.
package bootstrapkey
