package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fabricmesh/fabric/internal/version"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// exitError carries an exit code other than 1 and an already printed
// message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Run runs the fabric CLI with args (without the program name) and returns
// the exit code: 0 success, 1 failure, 2 bad usage.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, stdinConsole())
}

// runWith is Run answering questions from con.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, con console) int {
	root := newRootCommand(stdout, stderr, con)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "fabric: %s\n", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "fabric: %s\n", err)
	if isUsage(err) || status.Code(err) == codes.InvalidArgument {
		return 2
	}
	return 1
}

// NewRootCommand returns the fabric command tree, writing to stdout and
// stderr. Run runs it; the Debian package build generates the man pages and
// the shell completion from it.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	return newRootCommand(stdout, stderr, stdinConsole())
}

func newRootCommand(stdout, stderr io.Writer, con console) *cobra.Command {
	root := &cobra.Command{
		Use:   "fabric",
		Short: "fabric activates and inspects a WireGuard-meshed fabric cluster",
		Long: `fabric is the admin CLI of a fabric cluster.

Every machine runs fabricd with the same bootstrap key. 'fabric activate'
makes one of them the coordinator and the others nodes of a WireGuard mesh,
and writes an admin bundle; later commands read that bundle.`,
		Version:       version.Get().String(),
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("fabric {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newKeyCmd(), newActivateCmd(), newAddNodesCmd(), newStatusCmd(), newWatchCmd(), newServicesCmd(), newPasticheCmd(), newUsersCmd(), newVersionCmd(), newCoordinatorsCmd(), newNodesCmd(con), newEventsCmd(), newVPNCmd())
	root.SetHelpCommand(newHelpCmd())
	root.InitDefaultCompletionCmd()
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command with subcommands (the
// completion command's too) refuse an argument that names none of them,
// with cobra's suggestion: cobra itself checks only the root's, and shows
// the help of the parent with exit 0 for `fabric pastiche sned`. Given no
// argument, such a command still shows its help (exit 0).
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || !cmd.HasParent() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only on the root
	cmd.DisableFlagsInUseLine = true
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return unknownCommand(cmd, args[0])
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}

// unknownCommand is the usage error of a name that is no subcommand of
// cmd, with the names it may have meant.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	if cmd.HasAvailableSubCommands() {
		msg += fmt.Sprintf("\n\nRun '%s --help' for its commands.", cmd.CommandPath())
	}
	return usageError{errors.New(msg)}
}

// newHelpCmd is cobra's help command, but an unknown topic is a usage
// error (exit 2) with a suggestion, where cobra's prints the usage and
// exits 0.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "help shows the help of any command: fabric help [path to command].",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			switch {
			case err != nil:
				return usageError{err}
			case len(rest) > 0:
				return unknownCommand(cmd, rest[0])
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}

// usageError marks a command-line mistake (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.HasPrefix(err.Error(), "unknown flag") || strings.Contains(err.Error(), "arg(s)")
}

// rpcError describes a failed call for an operator: what was attempted and
// the gRPC status as a sentence. It keeps the status: a request the peer
// refused as invalid is bad usage (exit 2).
func rpcError(what string, err error) error {
	return &callError{what: what, err: err}
}

type callError struct {
	what string
	err  error
}

func (e *callError) Error() string { return e.what + ": " + describe(e.err) }
func (e *callError) Unwrap() error { return e.err }

func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.PermissionDenied:
		return "permission denied: " + st.Message()
	case codes.Unavailable:
		return "unreachable: " + st.Message()
	case codes.InvalidArgument:
		// core's sentinel says it once already.
		return "invalid request: " + strings.TrimPrefix(st.Message(), "invalid argument: ")
	case codes.FailedPrecondition:
		return "refused: " + st.Message()
	case codes.DeadlineExceeded:
		return "timed out: " + st.Message()
	default:
		return st.Message()
	}
}
