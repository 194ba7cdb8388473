// Package fabric holds the multi-host end-to-end tests of the fabric
// appliance (e2e_test.go): real fabricd and fabric binaries on network
// namespace hosts built by testbed/nshost, checked with wg and ping. They
// need root and skip without it. The code lives in the packages below:
// core, coordinator, node, pubapi, vpnapi, cli and internal.
package fabric
