// Package httpsig implements the subset of draft-cavage-http-signatures-10
// that fabric uses to sign calls between services: algorithm "ed25519" over
// the headers "(request-target) host date digest", with
//
//	(request-target): post /package.Service/Method
//	host: 203.0.113.3:7450
//	date: Sat, 07 Jun 2014 20:51:35 GMT
//	digest: SHA-256=<base64 of SHA-256 of the request body>
//
// joined by "\n" (no trailing newline) as the signing string, and the
// signature header
//
//	keyId="<key>",algorithm="ed25519",headers="(request-target) host date digest",signature="<base64>"
//
// The host is the endpoint the request is addressed to, its host:port (an
// HTTP/1.1 Host header, HTTP/2's :authority): a Verifier knows its own and
// refuses a request signed for any other (ErrWrongHost), so a request one
// endpoint received cannot be presented to another that whitelists the
// same key.
//
// The package knows nothing of gRPC: signedrpc carries these headers in
// gRPC metadata. It provides the formatter and a strict parser of the
// signature header (Params), signing (Sign), verification (Verifier, with
// one sentinel error per reason a request is refused), a bounded replay
// cache that fails closed when full (ReplayCache), and a per-key date
// source that keeps a client from producing the same signature twice
// (DateSource).
//
// A ReplayCache lives in memory. So that a restart does not forget what
// was accepted before it, a Verifier refuses every signature dated at or
// before its own start plus the skew window (ErrBeforeStart), which covers
// everything an earlier process could have accepted. Its refusals for a
// date alone (that one and ErrTooOldForReplayCache) are *DateFloorError
// values that say which dates it accepts, so that a client can sign again.
package httpsig
