package etcdstore

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// clientLog is the etcd client's logger: its warnings go to the store's
// logger at debug level, and the last error it retried is kept, because
// an operation that runs out of time returns only the context's error.
type clientLog struct {
	log     *slog.Logger
	lastErr *atomic.Pointer[string] // shared with the loggers With makes
	fields  []zapcore.Field
}

func newClientLog(log *slog.Logger) *clientLog {
	return &clientLog{log: log, lastErr: new(atomic.Pointer[string])}
}

func (c *clientLog) zap() *zap.Logger { return zap.New(c) }

func (c *clientLog) last() string {
	if p := c.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *clientLog) Enabled(l zapcore.Level) bool { return l >= zapcore.WarnLevel }

func (c *clientLog) With(fields []zapcore.Field) zapcore.Core {
	return &clientLog{log: c.log, lastErr: c.lastErr, fields: append(append([]zapcore.Field{}, c.fields...), fields...)}
}

func (c *clientLog) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *clientLog) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field{}, c.fields...), fields...) {
		f.AddTo(enc)
		if f.Type == zapcore.ErrorType {
			if err, ok := f.Interface.(error); ok {
				msg := err.Error()
				c.lastErr.Store(&msg)
			}
		}
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	c.log.Log(context.Background(), slog.LevelDebug, "etcd client: "+e.Message, attrs...)
	return nil
}

func (c *clientLog) Sync() error { return nil }
