// Package view holds a node's service view, what its reeve may know: the
// whitelist of its local endpoints, the endpoints its local clients may
// use and the catalog of services they may use. Every entry has a Key, so
// views can be diffed and changes applied. The steward computes views;
// reeves hold them.
package view
