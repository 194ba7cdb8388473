package fabricdconfig

import (
	"fmt"
	"strings"
)

const fileHeader = `# fabricd configuration (YAML).
#
# fabricd reads /etc/fabric/fabricd.yaml, or the file given with --config.
# Every key is optional but listen; a key left out takes the default shown
# below. A flag of the same name (fabricd --help) overrides the file.
#
# Nothing is ignored: an unknown key, a value of the wrong type or an
# invalid value stops fabricd with an error naming this file, the line and
# the key. Check the file without starting anything:
#
#     fabricd --check-config
#
# systemctl reload fabricd (SIGHUP) re-reads this file: log-level applies
# at once; a change of any other key is logged and needs
# systemctl restart fabricd. Every key: man fabricd, or docs/config.md.
`

// DefaultFile is the commented default config file the Debian package
// installs: every key's documentation and a commented-out example line.
func DefaultFile() []byte {
	var b strings.Builder
	b.WriteString(fileHeader)
	for _, k := range keys {
		fmt.Fprintf(&b, "\n# %s (%s; %s)\n", k.Name, k.Type, defaultPhrase(k))
		for _, line := range strings.Split(k.Doc, "\n") {
			fmt.Fprintf(&b, "#   %s\n", line)
		}
		example := k.Example
		if example == "" {
			example = k.Default
		}
		fmt.Fprintf(&b, "#%s: %s\n", k.Name, example)
	}
	return []byte(b.String())
}

func defaultPhrase(k *Key) string {
	if k.Required {
		return "required"
	}
	return "default: " + k.DefaultText()
}

// Markdown is the key reference of docs/config.md: a table of the keys,
// then each key's documentation.
func Markdown() string {
	var b strings.Builder
	b.WriteString("| key (and flag) | type | default | SIGHUP |\n|---|---|---|---|\n")
	for _, k := range keys {
		live := "restart"
		if k.Live {
			live = "applied"
		}
		fmt.Fprintf(&b, "| [`%s`](#%s) (`--%s`) | %s | %s | %s |\n", k.Name, k.Name, k.Name, k.Type, mdDefault(k), live)
	}
	for _, k := range keys {
		fmt.Fprintf(&b, "\n### %s\n\n%s\n\n", k.Name, strings.ReplaceAll(k.Doc, "\n", " "))
		example := k.Example
		if example == "" {
			example = k.Default
		}
		fmt.Fprintf(&b, "```yaml\n%s: %s\n```\n", k.Name, example)
	}
	return b.String()
}

func mdDefault(k *Key) string {
	if k.Required || k.DefaultDoc != "" {
		return k.DefaultText()
	}
	return "`" + k.DefaultText() + "`"
}
