package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
)

const chunkSize = 1 << 20

func newPasticheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pastiche",
		Short: "Use the pastiche demo service (file transfer between nodes)",
	}
	cmd.AddCommand(newPasticheSendCmd())
	return cmd
}

func newPasticheSendCmd() *cobra.Command {
	var (
		from, to, name, adminDir string
		timeout                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "send --from NODE --to NODE FILE",
		Short: "Send FILE from this machine through node --from's pastiche to node --to's",
		Long: `send streams FILE to the coordinator, which relays it (as its fabric-admin
client) to the pastiche of node --from; that pastiche sends it with its own
signed calls to the pastiche of node --to, which stores it under its state
directory (pastiche/) once its SHA-256 checks out. The command prints the
SHA-256 the target verified. The rules decide: by default a pastiche may only
send within its horde, and a refused send writes nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return usagef("--from and --to are required")
			}
			if name == "" {
				name = filepath.Base(args[0])
			}
			admin, err := openAdminDir(adminDir)
			if err != nil {
				return err
			}
			return pasticheSend(cmd, admin, timeout, from, to, name, args[0])
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "node whose pastiche sends (required)")
	cmd.Flags().StringVar(&to, "to", "", "node whose pastiche receives (required)")
	cmd.Flags().StringVar(&name, "name", "", "name of the file on the target (default: FILE's base name)")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, 0, "give up after this long (default 1m plus 1s per MiB of FILE)")
	return cmd
}

func pasticheSend(cmd *cobra.Command, admin *adminDir, timeout time.Duration, from, to, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if !cmd.Flags().Changed("timeout") {
		timeout = time.Minute + time.Duration(info.Size()>>20)*time.Second
	}
	ctx, cancel, err := withTimeout(cmd, timeout)
	if err != nil {
		return err
	}
	defer cancel()
	client, err := admin.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	stream, err := client.PasticheSend(ctx)
	if err != nil {
		return rpcError("sending "+path, err)
	}
	err = stream.Send(&pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Header{Header: &pubapipb.PasticheSendHeader{
		From: from, To: to, Name: name, Size: info.Size(),
	}}})
	h := sha256.New()
	buf := make([]byte, chunkSize)
	for err == nil {
		var n int
		n, err = io.ReadFull(f, buf)
		if n > 0 {
			h.Write(buf[:n])
			if serr := stream.Send(&pubapipb.PasticheSendRequest{Msg: &pubapipb.PasticheSendRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				err = serr
			}
		}
	}
	if err != io.EOF && err != io.ErrUnexpectedEOF {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rpcError(fmt.Sprintf("sending %s from %s to %s", path, from, to), rerr)
		}
		return fmt.Errorf("reading %s: %w", path, err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return rpcError(fmt.Sprintf("sending %s from %s to %s", path, from, to), err)
	}
	sum := hex.EncodeToString(resp.GetSha256())
	if local := hex.EncodeToString(h.Sum(nil)); sum != local {
		return fmt.Errorf("the target verified SHA-256 %s, but %s has %s", sum, path, local)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "sent %s (%d bytes) %s -> %s: stored as pastiche/%s\nsha256 verified by %s: %s\n",
		path, resp.GetSize(), resp.GetFrom(), resp.GetTo(), resp.GetName(), resp.GetTo(), sum)
	return nil
}
