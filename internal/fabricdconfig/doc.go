// Package fabricdconfig is fabricd's configuration: the keys of its config
// file (/etc/fabric/fabricd.yaml by default), the flags of the same names
// that override them, and the checks of both.
//
// The key table in keys.go is the one source of the keys: fabricd's flags,
// the commented default config file of the Debian package (DefaultFile)
// and the key reference in docs/config.md (Markdown, checked by this
// package's tests) are all made from it.
//
// Nothing is silently ignored: an unknown key, a duplicate key, a value of
// the wrong YAML type, an invalid value, an alias or a second YAML document
// is an error naming the file, the line and the key, e.g.
//
//	/etc/fabric/fabricd.yaml:3: wg-port: 70000: must be 1-65535
//	/etc/fabric/fabricd.yaml:5: unknown key "wg_port" (did you mean "wg-port"?) (keys: listen, ...)
//
// The package imports nothing of fabric outside internal/, so that other
// programs (the VM image's boot step, tests) can read the same file.
package fabricdconfig
