package bench

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const mib = 1 << 20

// writeBenchFile writes size bytes of incompressible-looking data to path
// quickly: one random MiB block, repeated, with each MiB's first 8 bytes
// replaced by its index so that no two MiB are equal. It returns the hex
// SHA-256 of what it wrote.
func writeBenchFile(path string, size int64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", path, err)
	}
	sum, werr := fillBenchFile(f, size)
	if err := f.Close(); werr == nil && err != nil {
		werr = err
	}
	if werr != nil {
		os.Remove(path)
		return "", fmt.Errorf("writing %s: %w", path, werr)
	}
	return sum, nil
}

func fillBenchFile(f *os.File, size int64) (string, error) {
	block := make([]byte, mib)
	rng := rand.NewChaCha8([32]byte{'f', 'a', 'b', 'r', 'i', 'c'})
	_, _ = rng.Read(block)
	h := sha256.New()
	w := bufio.NewWriterSize(f, mib)
	for i := int64(0); size > 0; i++ {
		binary.BigEndian.PutUint64(block, uint64(i))
		n := min(size, mib)
		if _, err := w.Write(block[:n]); err != nil {
			return "", err
		}
		h.Write(block[:n])
		size -= n
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// freeBytes is the space available to us on the file system holding dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// iperf3Result is the part of `iperf3 -J` output that we read.
type iperf3Result struct {
	End struct {
		SumReceived *struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// parseIperf3 returns end.sum_received.bits_per_second of `iperf3 -J`
// output (anything before the JSON object is skipped).
func parseIperf3(out string) (float64, error) {
	i := strings.Index(out, "{")
	if i < 0 {
		return 0, fmt.Errorf("iperf3 printed no JSON: %q", out)
	}
	var r iperf3Result
	if err := json.Unmarshal([]byte(out[i:]), &r); err != nil {
		return 0, fmt.Errorf("parsing iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived == nil || r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 JSON has no end.sum_received.bits_per_second")
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
