// Package sshusers reads and checks the cluster's SSH users: Linux user
// names with the public keys that may log in as them. Every peer's user
// manager (node/usermgr) installs them; this package is pure logic over
// bytes and records.
//
// # Users file
//
// The users given at activation (fabric activate --users FILE) are a YAML
// file:
//
//	# fabric SSH users
//	users:
//	  - name: alice
//	    keys:
//	      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... alice@laptop
//	      - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ... alice@desktop
//	  - name: bob
//	    keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... bob@work"]
//
// The only top-level key is users (required; "users: []" for none), a list
// of users with exactly the fields name and keys:
//
//   - name: a Linux user name matching NamePattern (a lowercase letter,
//     then up to 31 lowercase letters, digits, '_' or '-'), listed once,
//     and not a reserved name: root, daemon, bin, sys and the other system
//     accounts of Debian, names starting with "systemd-", and fabric-users.
//   - keys: 1 to MaxKeysPerUser public keys, each one line in
//     authorized_keys format, "TYPE BASE64 [COMMENT]" (the content of an
//     id_*.pub file). Options (from=, command=, ...), certificates, DSA
//     keys and RSA keys under 2048 bits are refused. A key (the same key
//     material, whatever its comment) appears once per user.
//
// Limits: MaxUsers users, MaxKeysPerUser keys per user, MaxKeyLen bytes per
// key, MaxTotalKeyBytes bytes for the keys of all users together, and
// MaxFileSize bytes for the file.
//
// Nothing is silently ignored: an unknown key or field, a missing field, a
// value of the wrong type, an invalid or reserved name, a malformed key, a
// duplicate, an alias or a second YAML document is an error naming the
// file and line, and the user and key:
//
//	users.yaml:5: user alice: key 2 ("alice@desktop"): not a public key in authorized_keys format (...)
//
// Errors never quote key material: a key is named by its position, its
// comment or its fingerprint, and a private key pasted by mistake is
// refused as such without being echoed.
package sshusers
