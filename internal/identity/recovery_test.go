package identity

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kept says which parts of an identity survived a reload.
type kept struct {
	VPNKey, SigningKey, TLSKey, TLSCert bool
}

func compareParts(before, after *Identity) kept {
	return kept{
		VPNKey:     before.VPNPrivKey == after.VPNPrivKey,
		SigningKey: before.SigningPrivKey.Equal(after.SigningPrivKey),
		TLSKey:     public(before).TLSPubKey == public(after).TLSPubKey,
		TLSCert:    bytes.Equal(before.TLSCertPin, after.TLSCertPin),
	}
}

// TestMissingFilesAreCreated covers the states a crash during the first
// start can leave, and files an operator removed.
func TestMissingFilesAreCreated(t *testing.T) {
	all := kept{VPNKey: true, SigningKey: true, TLSKey: true, TLSCert: true}
	tests := []struct {
		name        string
		remove      []string
		want        kept
		wantCreated []string
	}{
		{name: "nothing missing", want: all},
		{name: "crash after wg.key", remove: []string{SigningKeyFile, TLSKeyFile, TLSCertFile},
			want:        kept{VPNKey: true},
			wantCreated: []string{SigningKeyFile, TLSKeyFile, TLSCertFile}},
		{name: "crash after signing.key", remove: []string{TLSKeyFile, TLSCertFile},
			want:        kept{VPNKey: true, SigningKey: true},
			wantCreated: []string{TLSKeyFile, TLSCertFile}},
		{name: "crash after tls.key: new certificate for the same key", remove: []string{TLSCertFile},
			want:        kept{VPNKey: true, SigningKey: true, TLSKey: true},
			wantCreated: []string{TLSCertFile}},
		{name: "wg.key missing", remove: []string{WGKeyFile},
			want:        kept{SigningKey: true, TLSKey: true, TLSCert: true},
			wantCreated: []string{WGKeyFile}},
		{name: "signing.key missing", remove: []string{SigningKeyFile},
			want:        kept{VPNKey: true, TLSKey: true, TLSCert: true},
			wantCreated: []string{SigningKeyFile}},
		{name: "all files missing", remove: allFiles,
			wantCreated: allFiles},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			before := mustLoad(t, dir)
			for _, name := range tt.remove {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			after, err := LoadOrCreate(dir, testLogger(t, &logs))
			if err != nil {
				t.Fatalf("LoadOrCreate: %v", err)
			}
			if diff := cmp.Diff(tt.want, compareParts(before, after)); diff != "" {
				t.Errorf("parts kept (-want +got):\n%s", diff)
			}
			wantLog := "loaded identity"
			if len(tt.wantCreated) > 0 {
				wantLog = "created identity"
			}
			if !strings.Contains(logs.String(), wantLog) {
				t.Errorf("log %q does not say %q", logs.String(), wantLog)
			}
			for _, name := range tt.wantCreated {
				if !strings.Contains(logs.String(), name) {
					t.Errorf("log %q does not list created file %s", logs.String(), name)
				}
			}
			// The healed identity loads unchanged from now on.
			if diff := cmp.Diff(public(after), public(mustLoad(t, dir))); diff != "" {
				t.Errorf("identity changed on the next load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAcceptedModes(t *testing.T) {
	tests := []struct {
		name string
		file string
		perm os.FileMode
	}{
		{name: "private key read-only for owner", file: WGKeyFile, perm: 0o400},
		{name: "certificate readable by all", file: TLSCertFile, perm: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			before := mustLoad(t, dir)
			if err := os.Chmod(filepath.Join(dir, tt.file), tt.perm); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(public(before), public(mustLoad(t, dir))); diff != "" {
				t.Errorf("identity after chmod (-want +got):\n%s", diff)
			}
		})
	}
}
