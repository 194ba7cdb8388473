package yamlfile

import (
	"testing"

	"gopkg.in/yaml.v3"
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

// TestDescribe: a node is described on one line, whatever tag the file
// gave it.
func TestDescribe(t *testing.T) {
	tests := []struct{ data, want string }{
		{"x: 12\n", `!!int "12"`},
		{"x: abc\n", `!!str "abc"`},
		{"x: ~\n", "null"},
		{"x: [1]\n", "a sequence"},
		{"x: !custom a\n", `!custom "a"`},
		{"!%0A\n", `"!\n" ""`}, // a tag with a %-escaped line break (found by fuzzing)
	}
	for _, tt := range tests {
		t.Run(tt.data, func(t *testing.T) {
			root, err := Decode("f.yaml", []byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			n := root
			if root.Kind == yaml.MappingNode {
				n = root.Content[1]
			}
			if got := Describe(n); got != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
		})
	}
}
