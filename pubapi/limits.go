package pubapi

// MaxRequestSize bounds a message a pubapi server receives (the server's
// grpc.MaxRecvMsgSize): the largest is an activation, with a users file of
// at most 2 MiB (internal/sshusers), a rules file of at most 128 KiB
// (internal/rules) and its node endpoints; a PasticheSend chunk is 1 MiB.
const MaxRequestSize = 3 << 20
