// Package identity holds a peer's long-lived identity: its WireGuard key
// pair, its ed25519 signing key pair, and a self-signed TLS certificate with
// a separate ed25519 key. LoadOrCreate makes the identity on a peer's first
// start and loads the same one on every later start, so a peer that restarts
// keeps its keys.
//
// The identity lives in <state-dir>/identity, one file per part, each
// written atomically with mode 0600: wg.key (base64, as `wg genkey` prints
// it), signing.key and tls.key (PEM PKCS#8), tls.crt (PEM). A missing part is
// made anew, so a crash between the writes of the first start heals on the
// next. Malformed files, private-key files and an identity directory that
// group or others may access are refused; errors and logs never contain
// private key material. Exists tells whether a directory holds an identity
// (a peer that started before).
package identity
