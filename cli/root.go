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
	if isUsage(err) {
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
	root.AddCommand(newKeyCmd(), newActivateCmd(), newAddNodesCmd(), newStatusCmd(), newWatchCmd(), newServicesCmd(), newPasticheCmd(), newUsersCmd(), newVersionCmd(), newCoordinatorsCmd(), newNodesCmd(con))
	return root
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
// the gRPC status as a sentence.
func rpcError(what string, err error) error {
	return fmt.Errorf("%s: %s", what, describe(err))
}

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
		return "invalid request: " + st.Message()
	case codes.FailedPrecondition:
		return "refused: " + st.Message()
	case codes.DeadlineExceeded:
		return "timed out: " + st.Message()
	default:
		return st.Message()
	}
}
