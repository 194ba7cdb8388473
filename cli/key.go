package cli

import (
	"fmt"

	"github.com/fabricmesh/fabric/internal/bootstrapkey"
	"github.com/spf13/cobra"
)

func newKeyCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "key [--out FILE]",
		Short: "Make a random bootstrap key for a new cluster",
		Long: `key makes a random 32-byte bootstrap key, base64-encoded. Every fabricd of the
cluster is started with it (--bootstrap-key-file), and 'fabric activate' proves
it to them. With --out the key is written to FILE, mode 0600, which must not
exist yet; otherwise it is printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := bootstrapkey.Generate()
			if err != nil {
				return err
			}
			if out == "" {
				fmt.Fprintln(cmd.OutOrStdout(), bootstrapkey.Encode(key))
				return nil
			}
			if err := bootstrapkey.WriteFile(out, key); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "bootstrap key written to %s (mode 0600)\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the key to this file (mode 0600) instead of printing it")
	return cmd
}
