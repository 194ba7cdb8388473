package yamlfile

import (
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		wantNil bool
		wantErr string
	}{
		{name: "empty", data: "", wantNil: true},
		{name: "only comments", data: "# a\n# b\n", wantNil: true},
		{name: "mapping", data: "a: 1\n"},
		{name: "two documents", data: "a: 1\n---\nb: 2\n", wantErr: "f.yaml:2: more than one YAML document"},
		{name: "scanner error", data: "a: 1\nb: \"x\n", wantErr: "f.yaml:2: found unexpected end of stream"},
		{name: "parser error", data: "a: 1\nb: {c: [}\n", wantErr: "f.yaml:2: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := Decode("f.yaml", []byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Decode: error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if (root == nil) != tt.wantNil {
				t.Errorf("Decode: root %v, want nil %v", root, tt.wantNil)
			}
		})
	}
}
