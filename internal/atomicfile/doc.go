// Package atomicfile writes files so that a reader (or a restart after a
// crash) sees either the old content or the new content, never a mix or a
// truncated file: the data goes to a temporary file in the same directory,
// which is synced, given its mode, and renamed over the target; then the
// directory is synced so the rename itself is durable.
package atomicfile
