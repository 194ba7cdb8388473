package fabricdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/fabricmesh/fabric/internal/yamlfile"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// DefaultPath is where fabricd reads its config file when --config is not
// given.
const DefaultPath = "/etc/fabric/fabricd.yaml"

// File is a parsed config file: the keys it sets, each checked.
type File struct {
	// Path names the file in error messages.
	Path   string
	values map[string]fileValue
}

type fileValue struct {
	text string
	line int
}

// ReadFile reads and parses the config file at path. A missing file is an
// error unless missingOK (fabricd's default path may be absent), in which
// case it is an empty File.
func ReadFile(path string, missingOK bool) (File, error) {
	data, err := os.ReadFile(path)
	if missingOK && errors.Is(err, fs.ErrNotExist) {
		return File{Path: path}, nil
	}
	if err != nil {
		return File{}, fmt.Errorf("reading config file: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a config file's content; path names it in errors. Every
// problem is reported as "<path>:<line>: <key>: <what>" (or without the
// key when the key itself is the problem), all of them joined.
func Parse(path string, data []byte) (File, error) {
	f := File{Path: path, values: map[string]fileValue{}}
	root, err := yamlfile.Decode(path, data)
	if err != nil || root == nil {
		return f, err
	}
	if root.Kind != yaml.MappingNode {
		return File{}, fmt.Errorf("%s:%d: want a mapping of keys (%s), got %s", path, root.Line, keyNames(), yamlfile.Describe(root))
	}
	var errs []error
	errorf := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", path, n.Line, fmt.Sprintf(format, args...)))
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], root.Content[i+1]
		if kn.Kind != yaml.ScalarNode || kn.ShortTag() != "!!str" {
			errorf(kn, "want a key name, got %s", yamlfile.Describe(kn))
			continue
		}
		k := lookup(kn.Value)
		switch {
		case k == nil:
			errorf(kn, "unknown key %q%s (keys: %s)", kn.Value, suggest(kn.Value), keyNames())
			continue
		case f.values[k.Name].line != 0:
			errorf(kn, "duplicate key %q (first at line %d)", k.Name, f.values[k.Name].line)
			continue
		}
		text, err := scalarText(k, vn)
		if err == nil {
			err = k.parse(&Settings{}, text)
		}
		if err != nil {
			errorf(vn, "%s: %v", k.Name, err)
			continue
		}
		f.values[k.Name] = fileValue{text: text, line: kn.Line}
	}
	if len(errs) > 0 {
		return File{}, errors.Join(errs...)
	}
	return f, nil
}

// scalarText checks that n has the YAML type of k and returns its value as
// the text k.parse reads.
func scalarText(k *Key, n *yaml.Node) (string, error) {
	want := map[Type]string{String: "!!str", Integer: "!!int", Boolean: "!!bool"}[k.Type]
	if n.Kind != yaml.ScalarNode || n.ShortTag() != want {
		hint := ""
		if k.Type == String && n.Kind == yaml.ScalarNode && n.ShortTag() != "!!null" {
			hint = fmt.Sprintf(" (quote it: %s: %q)", k.Name, n.Value)
		}
		return "", fmt.Errorf("want %s %s, got %s%s", article(k.Type), k.Type, yamlfile.Describe(n), hint)
	}
	switch k.Type {
	case Integer:
		var v int64
		if err := n.Decode(&v); err != nil {
			return "", fmt.Errorf("want an integer, got %s", yamlfile.Describe(n))
		}
		return strconv.FormatInt(v, 10), nil
	case Boolean:
		var v bool
		if err := n.Decode(&v); err != nil {
			return "", fmt.Errorf("want true or false, got %s", yamlfile.Describe(n))
		}
		return strconv.FormatBool(v), nil
	}
	return n.Value, nil
}

func article(t Type) string {
	if t == Integer {
		return "an"
	}
	return "a"
}

// suggest proposes the key a misspelt one probably meant.
func suggest(name string) string {
	norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
	for _, k := range keys {
		if k.Name == norm || editDistance(k.Name, norm) <= 2 {
			return fmt.Sprintf(" (did you mean %q?)", k.Name)
		}
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// AddFlags defines on fs a flag for every key, named after it.
func AddFlags(fs *pflag.FlagSet) {
	for _, k := range keys {
		usage := k.Usage
		switch {
		case k.Required:
			usage += " (required, here or in the config file)"
		case k.DefaultDoc != "":
			usage += " (default: " + k.DefaultDoc + ")"
		}
		f := fs.VarPF(&flagValue{key: k, text: k.Default}, k.Name, "", usage)
		if k.Type == Boolean {
			f.NoOptDefVal = "true"
		}
	}
}

// flagValue is a key's flag; it checks its value as the file's would be.
type flagValue struct {
	key  *Key
	text string
}

func (v *flagValue) String() string { return v.text }

func (v *flagValue) Set(text string) error {
	if err := v.key.parse(&Settings{}, text); err != nil {
		return err
	}
	v.text = text
	return nil
}

func (v *flagValue) Type() string {
	switch v.key.Type {
	case Integer:
		return "int"
	case Boolean:
		return "bool"
	}
	return "string"
}

// Resolve returns the settings: for each key, its flag if given on fs,
// else its value in file, else its default. A required key set nowhere is
// an error.
func Resolve(file File, fs *pflag.FlagSet) (Settings, error) {
	var s Settings
	var errs []error
	for _, k := range keys {
		var text, source string
		v, inFile := file.values[k.Name]
		switch f := fs.Lookup(k.Name); {
		case f != nil && f.Changed:
			text, source = f.Value.String(), "--"+k.Name
		case inFile:
			text, source = v.text, fmt.Sprintf("%s:%d: %s", file.Path, v.line, k.Name)
		case k.Required:
			errs = append(errs, fmt.Errorf("%s is required: set %q in %s or pass --%s", k.Name, k.Name, file.Path, k.Name))
			continue
		case k.defaultFunc != nil:
			var err error
			if text, err = k.defaultFunc(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w; set %q in %s or pass --%s", k.Name, err, k.Name, file.Path, k.Name))
				continue
			}
			source = fmt.Sprintf("%s (%s, %q)", k.Name, k.DefaultDoc, text)
		default:
			text, source = k.Default, k.Name+" (default)"
		}
		if err := k.parse(&s, text); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
		}
	}
	return s, errors.Join(errs...)
}

// Change is a key whose value differs between two Settings.
type Change struct {
	Key      string
	Old, New string
	// Live: the daemon applies it without a restart.
	Live bool
}

// Changes lists the keys whose values differ from old to new, in key
// order.
func Changes(old, new Settings) []Change {
	var out []Change
	for _, k := range keys {
		if o, n := k.get(&old), k.get(&new); o != n {
			out = append(out, Change{Key: k.Name, Old: o, New: n, Live: k.Live})
		}
	}
	return out
}

// Apply returns s with the change's new value.
func (c Change) Apply(s Settings) Settings {
	if k := lookup(c.Key); k != nil {
		_ = k.parse(&s, c.New) // c.New came from a valid Settings
	}
	return s
}

// Render writes s as a config file, each key with where its value came
// from: a flag, the file's line, or the default.
func Render(s Settings, file File, fs *pflag.FlagSet) string {
	var b strings.Builder
	for _, k := range keys {
		origin := "default"
		if f := fs.Lookup(k.Name); f != nil && f.Changed {
			origin = "flag --" + k.Name
		} else if v, ok := file.values[k.Name]; ok {
			origin = fmt.Sprintf("%s:%d", file.Path, v.line)
		}
		value := k.get(&s)
		if k.Type == String {
			value = strconv.Quote(value)
		}
		fmt.Fprintf(&b, "%s: %s  # %s\n", k.Name, value, origin)
	}
	return b.String()
}
