// Package signedrpc signs every gRPC call a client makes with its ed25519
// key and has each endpoint accept only the clients on its whitelist. It is
// the gRPC plumbing of fabric's signed calls (layer 7): the signatures
// follow draft-cavage-http-signatures-10 as implemented by package httpsig,
// carried in gRPC metadata. Calls run inside the WireGuard mesh, as plain
// gRPC over the tunnel.
//
// A client dials with DialOptions(keyID, signer); the signer holds the
// private key (reeve). A server is built with ServerOptions(cfg); cfg's
// Whitelist gives the public key of each client allowed to call it. A
// handler learns its verified caller with Caller(ctx). The codecs are
// scoped to that ClientConn or Server, never registered globally. Put other
// client interceptors before DialOptions' options so the signing
// interceptor runs last, and put ServerOptions' options before other server
// interceptors (do not use grpc.UnaryInterceptor or grpc.StreamInterceptor,
// which run first) so the verifying interceptor runs first.
//
// # Unary calls
//
// The client marshals the request deterministically
// (proto.MarshalOptions{Deterministic: true}); these bytes are both what is
// digested and what is sent. It adds three metadata entries:
//
//	date:      Mon, 04 May 2026 12:00:00 GMT        (RFC 7231 IMF-fixdate)
//	digest:    SHA-256=<base64 of SHA-256(request bytes)>
//	signature: keyId="<keyID>",algorithm="ed25519",headers="(request-target) host date digest",signature="<base64>"
//
// where the signature is ed25519 over
//
//	(request-target): post /<package>.<Service>/<Method>
//	host: <the endpoint's host:port>
//	date: <date>
//	digest: <digest>
//
// The host header is the call's HTTP/2 :authority, which stands for Host
// in HTTP/2: the host:port of the ClientConn's target
// ("passthrough:///203.0.113.3:7450" gives 203.0.113.3:7450), which the
// client also sets as the call's authority (grpc.CallAuthority), so what is
// signed is what is sent. A server is configured with its own host:port
// (ServerConfig.Host, as its clients dial it) and refuses a call whose
// :authority is another ("signed for another endpoint"): a call recorded by
// one endpoint, replayed unchanged to another that whitelists the same
// client, is refused, and one re-addressed to it fails the signature.
//
// The date of a unary call comes from one httpsig.DateSource per key ID in
// the process, so two identical requests never carry the same signature:
// the second gets a later date (one second later per repeat; a burst of identical calls
// waits once it would run more than httpsig.DefaultMaxAhead ahead of the
// clock).
//
// The server's codec records the SHA-256 of the raw bytes it received for
// each decoded request; the interceptor checks the host, the digest header
// against those bytes (never a re-marshal), the date (within the skew
// window), the key ID (whitelist), the signature, that the signature is
// dated after the server's start plus the skew, and that it was not seen
// before inside the window (httpsig.ReplayCache).
//
// # Restarts
//
// The replay cache is in memory, so a server refuses every call dated at
// or before its start plus the skew window: whatever an earlier process
// accepted is dated so. Such a refusal is for the date alone, as is one by
// a full replay cache's floor and a replay (for an honest client, the same
// call signed by an earlier process of its own with the same date: a
// client restarted within the second, or dating its first call after a
// server's start as its earlier process did). The refusal's trailer says
// which dates the server accepts (inclusive, IMF-fixdates):
//
//	fabric-earliest-date: <date>
//	fabric-latest-date:   <date>
//
// The client then signs the call again (at most twice) dated
// fabric-earliest-date, after waiting the difference if the earliest is
// after the latest (for a second after the server starts). Nothing ran:
// the server refused before its handler. The client remembers the earliest date per host:port, for
// the whole process, and dates its later calls to that host no earlier
// until its clock passes it, so a restarted server refuses each client
// process once. Identical unary calls that run ahead of that date wait, as
// the server accepts dates up to the latest only.
//
// # Streams
//
// A streaming call has no request bytes when it opens, so the client makes
// a fresh nonce for each stream: 16 random bytes (crypto/rand), sent as
// their padded standard base64 (24 characters) in a fourth metadata entry,
// and the call is signed like a unary call whose request bytes are the
// nonce:
//
//	fabric-stream-nonce: <base64 of the 16 nonce bytes>
//	date:                <date>
//	digest:              SHA-256=<base64 of SHA-256(the 16 nonce bytes)>
//	signature:           keyId="<keyID>",algorithm="ed25519",headers="(request-target) host date digest",signature="<base64>"
//
// The signed headers and signing string are those of a unary call; in
// HTTP terms the request body is the 16 raw nonce bytes. As the digest
// differs from stream to stream, so does the signature, whatever the date:
// the date is the client's clock (the DateSource is not consulted), and
// any number of streams may open in the same second.
//
// When the stream opens, the server refuses it with codes.Unauthenticated
// if fabric-stream-nonce is missing ("stream nonce missing"), or appears
// more than once or is not the padded standard base64 of exactly 16 bytes
// in canonical form, i.e. what encoding the decoded bytes gives back
// ("stream nonce malformed"); a call with no signature at all is
// refused as unsigned first. It then checks the digest header against the
// SHA-256 of the decoded nonce, exactly as a unary digest is checked
// against the bytes received, and makes the other checks of a unary call
// (host, date, whitelist, signature, start, replay).
//
// A server that accepts a stream's signature sends its response headers at
// once (empty), before the handler runs, and the client returns the stream
// to its caller only when they arrive: a refused stream is the error of
// opening it, before the caller sends anything, and one refused for its
// date alone is opened again as a unary call is signed again. Handlers of
// signed streams cannot set headers of their own (trailers they can), and
// a server that is not built with ServerOptions never lets a signed
// client-streaming call start.
//
// Every client-to-server message i (i = 1, 2, ...) is then sent in an
// envelope:
//
//	offset  size  field
//	0       4     magic "FSM1"
//	4       32    chain_i
//	36      64    sig_i
//	100     n     payload_i: the message, marshalled deterministically
//
//	chain_0 = SHA-256(call signature)   (the 64 raw signature bytes of the call's signature header)
//	chain_i = SHA-256(chain_{i-1} || SHA-256(payload_i))
//	sig_i   = ed25519 signature by the call's key over "fabric signed stream v1\n" || chain_i
//
// The server checks every message before the handler sees it: the magic
// (a message without it is an unsigned message on a signed stream), that
// chain_i follows from the previous message and this payload (otherwise
// the message was tampered with, reordered, preceded by a dropped message,
// or taken from another stream), and sig_i with the key that signed the
// call. The first failure ends the stream with codes.Unauthenticated naming
// the message number, and the handler's RecvMsg returns that error.
// Server-to-client messages are not signed, as responses are not.
//
// The chain does not mark the end of a stream: a client-to-server stream
// cut short after message k looks like a stream of k messages.
//
// # Errors
//
// Refused calls end with codes.Unauthenticated (missing, malformed or bad
// signature, date, digest or stream nonce, another endpoint's host, a date
// before the server's start, replay, unknown key, bad stream message) or
// codes.PermissionDenied (a known key that is not on this
// endpoint's whitelist), with a message such as
//
//	signature rejected: keyId "pastiche@h7" is not on the whitelist of this endpoint
//
// Messages never contain keys.
package signedrpc
