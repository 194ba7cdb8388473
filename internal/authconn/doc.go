// Package authconn is the one mechanism fabric uses to authenticate every
// gRPC connection: a gRPC credentials.TransportCredentials that wraps TLS 1.3
// and, right after the TLS handshake and before any RPC, has the two sides
// prove a credential over the TLS exporter value of that connection.
//
// # Credentials
//
// The client proves exactly one credential:
//
//   - The bootstrap key (MethodBootstrap), a 32-byte secret shared by every
//     fabricd of a cluster before activation. Both sides prove it: the client
//     with HMAC-SHA256(key, "fabric authconn v1 client" || ekm), the server
//     with HMAC-SHA256(key, "fabric authconn v1 server" || ekm). A party
//     without the key can neither call a peer nor pose as one, and there is no
//     trust on first use.
//   - An ed25519 signing key (MethodSignature): the admin key or a node key,
//     after activation. The client sends its public key and
//     ed25519.Sign(privKey, "fabric authconn v1 client ed25519" || ekm); the
//     server looks the key up to learn the caller's identity. The server is
//     authenticated by the pin the client holds: the SHA-256 of the server's
//     leaf certificate (CertPin).
//
// Here ekm is tls.ConnectionState.ExportKeyingMaterial(
// "EXPORTER-fabric-authconn-v1", nil, 32). It differs for every TLS session,
// so a relaying man-in-the-middle, which runs two TLS sessions, cannot reuse
// a proof from one in the other, and a recorded proof is worthless on a new
// connection.
//
// The client does not verify the server certificate against a CA
// (InsecureSkipVerify): trust comes from the bootstrap key proof or from the
// certificate pin, which is checked in tls.Config.VerifyConnection.
//
// # Wire protocol
//
// After the TLS 1.3 handshake (ALPN "h2") the client sends one message and
// the server answers with one message, before any HTTP/2 byte. Each message
// is a 4-byte big-endian length followed by that many bytes of JSON; a
// length of zero or above 4096 is malformed. Byte strings are base64 (the
// encoding/json encoding of []byte).
//
// Client hello:
//
//	{"v":1,"method":"bootstrap-hmac","proof":"<HMAC, 32 bytes>"}
//	{"v":1,"method":"ed25519","pubKey":"<32 bytes>","proof":"<signature, 64 bytes>"}
//
// Server reply, on success (proof only for the bootstrap method):
//
//	{"v":1,"ok":true,"proof":"<HMAC, 32 bytes>"}
//
// on failure, after which the server closes the connection:
//
//	{"v":1,"ok":false,"reason":"bootstrap key mismatch"}
//
// Reasons are short and never contain secrets: "malformed hello",
// "unsupported protocol version", "unsupported method", "bootstrap key
// mismatch", "bootstrap key not accepted here", "signature method not
// accepted here", "signature does not verify", "unknown signing key".
//
// The server bounds the whole handshake (TLS and proofs) by
// ServerConfig.HandshakeTimeout, so a silent client is dropped.
//
// # Errors at the client
//
// grpc-go reports every failed client handshake as codes.Unavailable. The
// ClientCredentials remember recent authentication failures (a refusal by
// the peer, a peer that did not prove the bootstrap key, a certificate that
// does not match the pin), and the interceptors installed by DialOptions turn
// an RPC error caused by one of them into codes.PermissionDenied with a
// message such as "peer 198.51.100.3:7443 refused our credentials: bootstrap
// key mismatch". Plain network errors stay codes.Unavailable.
//
// # Handlers
//
// Handlers learn who called from the connection: FromContext returns the
// AuthInfo (method, identity, signing public key) and RequireMethod refuses a
// call whose connection was not authenticated with an acceptable method.
package authconn
