package cli

import (
	"fmt"

	"github.com/fabricmesh/fabric/internal/version"
	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version, commit and Go version",
		Long: `version prints the version of this fabric CLI, the git commit it was built
from and the Go toolchain that built it. 'fabric status' shows the
coordinator's version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "fabric %s\n", version.Get())
			return err
		},
	}
}
