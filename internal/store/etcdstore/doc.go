// Package etcdstore is a store.Store over etcd v3, for clusters whose
// coordinators share their state.
//
// Every key lives under a prefix (Options.Prefix, "/fabric/" by default),
// so one etcd cluster can hold several things. A View reads at one etcd
// revision, fixed by its first read. An Update is a serializable
// transaction built on clientv3.Txn, as clientv3/concurrency's STM builds
// them but with prefix scans: its reads are made at one revision and
// recorded with their mod revisions (keys read as absent too), its writes
// are buffered, and it commits in one Txn that compares every key read
// and that no key under a scanned prefix changed since. When another
// writer changed what it read, the Txn fails its comparisons, nothing is
// written, and Update runs its function again (at most
// Options.MaxAttempts times). Updates of one Store are also serialized in
// the process, so they conflict only with other clients.
//
// Every View and Update is bounded by Options.Timeout. When etcd cannot
// answer, because too few members are reachable or none knows a leader,
// the error matches ErrNoQuorum and says how many members were reachable.
//
// WatchPrefix reads the keys it starts from at one revision and follows
// them with an etcd watch from the next one, so nothing is missed or seen
// twice between the two.
package etcdstore
