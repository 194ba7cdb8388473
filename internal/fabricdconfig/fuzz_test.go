package fabricdconfig

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// FuzzParse: any config file parses or is refused with errors that name the
// file at a line; a file that parses and resolves renders (as
// --check-config prints it) to a file that parses and resolves to the same
// settings.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"listen: 198.51.100.10:7443\nname: node1\nhorde: sharks\n",
		"listen: 198.51.100.10:7443\nwg-port: 51820\nlog-level: debug\nno-pastiche: true\n",
		"listen: \"[2001:db8::1]:7443\"\nstate-dir: /var/lib/fabric\nname: \"n\\u00e9\"\n",
		"listen: 198.51.100.10:7443\nstore: etcd://192.0.2.1:2379/fabric\n",
		"wg_port: 1\n",
		"listen: 198.51.100.10:7443\nlisten: 198.51.100.11:7443\n",
		"name: 12\n",
		"- a\n",
		"listen: [",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(path, data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Fatalf("error line %q does not name the file at a line (error %q)", line, err)
				}
			}
			return
		}
		fs := pflag.NewFlagSet("fabricd", pflag.ContinueOnError)
		AddFlags(fs)
		settings, err := Resolve(file, fs)
		if err != nil {
			return // a required key is missing, or a default cannot be computed
		}
		rendered := Render(settings, file, fs)
		again, err := Parse(path, []byte(rendered))
		if err != nil {
			t.Fatalf("the rendered file does not parse: %v\n%s", err, rendered)
		}
		settings2, err := Resolve(again, fs)
		if err != nil {
			t.Fatalf("the rendered file does not resolve: %v\n%s", err, rendered)
		}
		if settings != settings2 {
			t.Fatalf("the rendered file resolves to other settings:\nfile:     %+v\nrendered: %+v\n%s", settings, settings2, rendered)
		}
	})
}
