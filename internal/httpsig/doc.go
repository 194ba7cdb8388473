// Package httpsig implements the subset of draft-cavage-http-signatures-10
// that fabric uses to sign calls between services: algorithm "ed25519" over
// the headers "(request-target) date digest", with
//
//	(request-target): post /package.Service/Method
//	date: Sat, 07 Jun 2014 20:51:35 GMT
//	digest: SHA-256=<base64 of SHA-256 of the request body>
//
// joined by "\n" (no trailing newline) as the signing string, and the
// signature header
//
//	keyId="<key>",algorithm="ed25519",headers="(request-target) date digest",signature="<base64>"
//
// The package knows nothing of gRPC: signedrpc carries these three headers
// in gRPC metadata. It provides the formatter and a strict parser of the
// signature header (Params), signing (Sign), verification (Verifier, with
// one sentinel error per reason a request is refused), a bounded replay
// cache that fails closed when full (ReplayCache), and a per-key date
// source that keeps a client from producing the same signature twice
// (DateSource).
//
// Draft-cavage signatures do not cover the identity of the endpoint: a
// captured request can be presented to another endpoint that whitelists the
// same key, inside the skew window. Each endpoint keeps its own ReplayCache.
package httpsig
