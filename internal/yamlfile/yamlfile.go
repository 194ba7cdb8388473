// Package yamlfile checks hand-written YAML files strictly and reports every
// problem as "<file>:<line>: <what>": a syntax error, an unknown or
// duplicate key, a value of the wrong type, an alias, a second document.
// The rules file (internal/rules) and the SSH users file (internal/sshusers)
// are read with it. It works on yaml.v3 nodes, so callers keep the line of
// every value for their own checks.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decode decodes the single YAML document of data and returns its root
// node, or nil when data holds no document (empty, or only comments). name
// is the file name of error messages.
func Decode(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) || (err == nil && len(doc.Content) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(name, err)
	default:
		return nil, fmt.Errorf("%s:%d: more than one YAML document", name, extra.Line)
	}
	return doc.Content[0], nil
}

var yamlErrorRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlParserProblems are the problems yaml.v3 (v3.0.1) reports from its
// parser, as opposed to its scanner. For those it reports the 0-based line
// where the enclosing construct starts, and no line at all for line 0.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found undefined tag handle":             true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// syntaxError rewrites a yaml.v3 syntax error as "<name>:<line>: <what>",
// correcting yaml.v3's off-by-one line of parser errors. For those the
// line is where the enclosing construct starts: yaml.v3 loses the problem's
// own position.
func syntaxError(name string, err error) error {
	m := yamlErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	line, problem := 0, m[2]
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
	}
	if yamlParserProblems[problem] {
		line++
	}
	if line == 0 {
		return fmt.Errorf("%s: %s", name, problem)
	}
	return fmt.Errorf("%s:%d: %s", name, line, problem)
}

// Checker collects every problem of one file.
type Checker struct {
	Name string
	errs []error
}

// Errorf records a problem at n's line.
func (c *Checker) Errorf(n *yaml.Node, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s:%d: %s", c.Name, n.Line, fmt.Sprintf(format, args...)))
}

// Err joins the problems recorded so far, nil if none.
func (c *Checker) Err() error { return errors.Join(c.errs...) }

// Fields checks that n is a mapping with unique keys from allowed and
// returns the values by key. what prefixes the messages ("rule: ") and
// field names the keys ("key", "field"); it returns nil after reporting
// when n is not a mapping.
func (c *Checker) Fields(n *yaml.Node, what, field string, allowed []string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		c.Errorf(n, "%swant a mapping with %ss %s; got %s", what, field, strings.Join(allowed, ", "), Describe(n))
		return nil
	}
	m := make(map[string]*yaml.Node)
	keyLines := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key, ok := k.Value, k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge"
		if !ok {
			key, ok = c.Str(k, what+field)
		}
		switch {
		case !ok:
		case !slices.Contains(allowed, key):
			c.Errorf(k, "%sunknown %s %q (want %s)", what, field, key, strings.Join(allowed, ", "))
		case keyLines[key] != 0:
			c.Errorf(k, "%sduplicate %s %q (first at line %d)", what, field, key, keyLines[key])
		default:
			m[key], keyLines[key] = v, k.Line
		}
	}
	return m
}

// Str returns the string value of a plain string scalar; what names it in
// the message otherwise.
func (c *Checker) Str(n *yaml.Node, what string) (string, bool) {
	if n.Kind == yaml.AliasNode {
		c.Errorf(n, "%s: aliases are not supported", what)
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		c.Errorf(n, "%s: want a string, got %s", what, Describe(n))
		return "", false
	}
	return n.Value, true
}

// Seq returns the items of a sequence.
func (c *Checker) Seq(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	if n.Kind != yaml.SequenceNode {
		c.Errorf(n, "%s: want a sequence, got %s", what, Describe(n))
		return nil, false
	}
	return n.Content, true
}

// Describe names what a node is, for "want X, got Y" messages.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		return "an alias (aliases are not supported)"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return describeTag(n.ShortTag()) + " " + strconv.Quote(n.Value)
	}
	return "nothing"
}

// describeTag is a node's tag for an error message: as it is when it is
// one printable word (!!str), else quoted, since a file's own tags may hold
// spaces, line breaks or control characters (found by fuzzing: the tag of "!%0A" is "!\n").
func describeTag(tag string) string {
	if tag == "" || strings.ContainsFunc(tag, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return strconv.Quote(tag)
	}
	return tag
}
