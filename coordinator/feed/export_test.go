package feed

// Waiting is the number of watchers waiting in Next for a change.
func (f *Feed) Waiting() int {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	n := 0
	for _, ws := range f.waiters {
		n += len(ws)
	}
	return n
}

// Spans is the number of spans the feed keeps.
func (f *Feed) Spans() int {
	f.spanMu.Lock()
	defer f.spanMu.Unlock()
	return len(f.spans)
}
