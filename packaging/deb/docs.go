package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fabricmesh/fabric/cli"
	"github.com/fabricmesh/fabric/internal/fabricdconfig"
	"github.com/fabricmesh/fabric/node"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// manPage is one generated man page.
type manPage struct {
	name    string // "fabric-activate.1"
	section string
	content []byte
}

// fabricCommand is the CLI's command tree, with the completion command
// cobra adds at run time.
func fabricCommand() *cobra.Command {
	root := cli.NewRootCommand(io.Discard, io.Discard)
	root.InitDefaultCompletionCmd()
	root.DisableAutoGenTag = true // the tag holds today's date
	return root
}

// fabricdCommand describes fabricd for its man page: its real flags (the
// config keys and the others) and a section on every config key.
func fabricdCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "fabricd",
		Short:             "the fabric appliance daemon",
		Long:              node.Description + "\n\n" + keysText() + migrateText(),
		DisableAutoGenTag: true,
		Run:               func(*cobra.Command, []string) {},
	}
	cmd.Flags().AddFlagSet(node.Flags())
	return cmd
}

// keysText documents the config keys for the man page (in the Markdown
// that cobra's man page generator reads).
func keysText() string {
	var b strings.Builder
	b.WriteString("# CONFIGURATION FILE\n\nThe file is YAML. Each key is also a flag of the same name, which overrides it.\n")
	for _, k := range fabricdconfig.Keys() {
		fmt.Fprintf(&b, "\n**%s** (%s; %s)\n: %s\n", k.Name, k.Type, keyDefault(k), strings.ReplaceAll(k.Doc, "\n", " "))
	}
	b.WriteString("\n# FILES\n\n" +
		"/etc/fabric/fabricd.yaml\n: the config file (a conffile: commented defaults)\n\n" +
		"/etc/fabric/bootstrap.key\n: the cluster's bootstrap key, mode 0600 (made with fabric key)\n\n" +
		"/var/lib/fabric\n: the peer's identity and store\n")
	return b.String()
}

// migrateText documents fabricd migrate-store for the man page.
func migrateText() string {
	var b strings.Builder
	b.WriteString("\n# MIGRATE-STORE\n\n**fabricd migrate-store --from bolt:PATH --to etcd://HOST:PORT[,HOST:PORT...][/PREFIX]** [flags]\n\n" +
		strings.ReplaceAll(node.MigrateDescription, "\n", " ") + "\n")
	node.MigrateFlags().VisitAll(func(f *pflag.Flag) {
		fmt.Fprintf(&b, "\n**--%s**\n: %s\n", f.Name, f.Usage)
	})
	return b.String()
}

func keyDefault(k fabricdconfig.Key) string {
	if k.Required {
		return "required"
	}
	return "default: " + k.DefaultText()
}

// manPages generates the man pages of fabric (section 1, a page per
// command) and fabricd (section 8).
func manPages(version string, date time.Time) ([]manPage, error) {
	dir, err := os.MkdirTemp("", "fabric-man")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	source := "fabric " + version
	if err := doc.GenManTree(fabricCommand(), &doc.GenManHeader{Section: "1", Date: &date, Source: source, Manual: "fabric manual"}, dir); err != nil {
		return nil, fmt.Errorf("fabric man pages: %w", err)
	}
	var fabricd bytes.Buffer
	if err := doc.GenMan(fabricdCommand(), &doc.GenManHeader{Section: "8", Date: &date, Source: source, Manual: "fabric manual"}, &fabricd); err != nil {
		return nil, fmt.Errorf("fabricd man page: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	pages := []manPage{{name: "fabricd.8", section: "8", content: fabricd.Bytes()}}
	for _, path := range names {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		pages = append(pages, manPage{name: filepath.Base(path), section: "1", content: data})
	}
	return pages, nil
}

// bashCompletion is fabric's bash completion script.
func bashCompletion() ([]byte, error) {
	var buf bytes.Buffer
	if err := fabricCommand().GenBashCompletionV2(&buf, true); err != nil {
		return nil, fmt.Errorf("bash completion: %w", err)
	}
	return buf.Bytes(), nil
}
