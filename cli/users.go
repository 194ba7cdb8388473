package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fabricmesh/fabric/internal/sshusers"
	"github.com/fabricmesh/fabric/pubapi"
	"github.com/fabricmesh/fabric/pubapi/pubapipb"
	"github.com/spf13/cobra"
)

// SSHUsers is the JSON of `fabric users list -o json`.
type SSHUsers struct {
	// Revision is the cluster revision of the users' last change.
	Revision uint64    `json:"revision"`
	Users    []SSHUser `json:"users"`
}

// SSHUser is one SSH user with its keys.
type SSHUser struct {
	Name string `json:"name"`
	// Revision is the cluster revision of the user's last change.
	Revision uint64   `json:"revision"`
	Keys     []SSHKey `json:"keys"`
}

// SSHKey is one authorized key of a user.
type SSHKey struct {
	Type        string `json:"type"`
	Fingerprint string `json:"fingerprint"`
	Comment     string `json:"comment,omitempty"`
	// Key is the authorized_keys line.
	Key string `json:"key"`
}

// readUsers reads and checks an SSH users file ("" gives no users).
func readUsers(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--users: %w", err)
	}
	if _, err := sshusers.Parse(path, data); err != nil {
		return "", usagef("--users: %v", err)
	}
	return string(data), nil
}

func newUsersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "List, add and remove the SSH users that every peer of the cluster has",
		Long: `The cluster's SSH users are Linux users that every peer (the coordinator and
every node) creates, with the public keys that may log in as them
(~/.ssh/authorized_keys). They are given at activation (fabric activate
--users FILE) and changed with these commands; every peer applies a change
within its next update. A removed user is locked on every peer (its keys are
emptied, its account expired, its shell set to nologin), never deleted, so no
file is lost; adding it again unlocks it.`,
	}
	cmd.AddCommand(newUsersListCmd(), newUsersAddCmd(), newUsersRemoveCmd())
	return cmd
}

func newUsersListCmd() *cobra.Command {
	var (
		adminDir, output string
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "list [-o table|json]",
		Short: "List the cluster's SSH users and their keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			client, err := dialAdmin(adminDir)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.ListSSHUsers(ctx, &pubapipb.ListSSHUsersRequest{})
			if err != nil {
				return rpcError("listing SSH users", err)
			}
			users := sshUsersFromProto(resp)
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(users)
			}
			printSSHUsers(cmd.OutOrStdout(), users)
			return nil
		},
	}
	addAdminDirFlag(cmd, &adminDir)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

func sshUsersFromProto(resp *pubapipb.ListSSHUsersResponse) SSHUsers {
	out := SSHUsers{Revision: resp.GetRevision(), Users: []SSHUser{}}
	for _, u := range resp.GetUsers() {
		su := SSHUser{Name: u.GetName(), Revision: u.GetRevision(), Keys: []SSHKey{}}
		for _, line := range u.GetKeys() {
			su.Keys = append(su.Keys, sshKeyOf(line))
		}
		out.Users = append(out.Users, su)
	}
	return out
}

// sshKeyOf describes a key line the coordinator sent.
func sshKeyOf(line string) SSHKey {
	k, err := sshusers.ParseKey(line)
	if err != nil {
		return SSHKey{Type: "?", Fingerprint: "?", Key: line}
	}
	return SSHKey{Type: k.Type, Fingerprint: k.Fingerprint, Comment: k.Comment, Key: k.Line}
}

func printSSHUsers(out io.Writer, users SSHUsers) {
	if len(users.Users) == 0 {
		fmt.Fprintf(out, "no SSH users (last change at revision %d)\n", users.Revision)
		return
	}
	fmt.Fprintf(out, "%d SSH user(s), last change at revision %d\n\n", len(users.Users), users.Revision)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tREVISION\tTYPE\tFINGERPRINT\tCOMMENT")
	for _, u := range users.Users {
		for i, k := range u.Keys {
			if i == 0 {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", u.Name, u.Revision, k.Type, k.Fingerprint, k.Comment)
			} else {
				fmt.Fprintf(tw, "\t\t%s\t%s\t%s\n", k.Type, k.Fingerprint, k.Comment)
			}
		}
	}
	tw.Flush()
}

func newUsersAddCmd() *cobra.Command {
	var (
		adminDir       string
		keys, keyFiles []string
		timeout        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add NAME (--key KEY | --key-file FILE)...",
		Short: "Add an SSH user, or keys to an existing one",
		Long: `add gives the SSH user NAME the keys of every --key (one public key in
authorized_keys format, "TYPE BASE64 [COMMENT]") and --key-file (a file of
such keys, one per line, like an id_ed25519.pub or an authorized_keys file;
empty lines and lines starting with # are skipped). A new user is created on
every peer; a user that was removed is unlocked. Keys the user already has are
left as they are.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := sshusers.CheckName(name); err != nil {
				return usageError{err}
			}
			all, err := gatherKeys(keys, keyFiles)
			if err != nil {
				return err
			}
			if len(all) == 0 {
				return usagef("give the user's keys with --key or --key-file")
			}
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			client, err := dialAdmin(adminDir)
			if err != nil {
				return err
			}
			defer client.Close()
			ch, err := client.AddSSHUser(ctx, &pubapipb.AddSSHUserRequest{Name: name, Keys: all})
			if err != nil {
				return rpcError("adding SSH user "+name, err)
			}
			out := cmd.OutOrStdout()
			switch {
			case !ch.GetChanged():
				fmt.Fprintf(out, "SSH user %s already has these keys; nothing changed (revision %d)\n", name, ch.GetRevision())
			case len(ch.GetUser().GetKeys()) == len(ch.GetKeys()):
				fmt.Fprintf(out, "added SSH user %s with %d key(s) at revision %d; every peer creates it\n", name, len(ch.GetKeys()), ch.GetRevision())
			default:
				fmt.Fprintf(out, "added %d key(s) to SSH user %s (now %d) at revision %d\n", len(ch.GetKeys()), name, len(ch.GetUser().GetKeys()), ch.GetRevision())
			}
			printKeys(out, ch.GetKeys())
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, `a public key, "TYPE BASE64 [COMMENT]" (repeatable)`)
	cmd.Flags().StringArrayVar(&keyFiles, "key-file", nil, "a file of public keys, one per line (repeatable)")
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

// gatherKeys checks the keys of --key and --key-file flags; errors name the
// flag, the file and line, never the key material.
func gatherKeys(keys, keyFiles []string) ([]string, error) {
	var all []string
	for i, k := range keys {
		if _, err := sshusers.ParseKey(k); err != nil {
			return nil, usagef("--key #%d%s: %v", i+1, sshusers.Label(k), err)
		}
		all = append(all, k)
	}
	for _, path := range keyFiles {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, sshusers.MaxKeyLen+2)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if _, err := sshusers.ParseKey(line); err != nil {
				return nil, usagef("--key-file %s:%d%s: %v", path, n, sshusers.Label(line), err)
			}
			all = append(all, line)
		}
		if err := sc.Err(); err != nil {
			return nil, usagef("--key-file %s: %v", path, err)
		}
	}
	return all, nil
}

func newUsersRemoveCmd() *cobra.Command {
	var (
		adminDir string
		keys     []string
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "remove NAME [--key FINGERPRINT|KEY]...",
		Short: "Remove an SSH user (locked on every peer, never deleted), or some of its keys",
		Long: `remove takes the SSH user NAME out of the cluster: every peer locks it (its
authorized keys are emptied, the account is expired and its shell set to
nologin) and keeps its files. With --key, only those keys are removed (given
as fingerprints "SHA256:...", as 'fabric users list' shows them, or as key
lines); a user keeps at least one key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			ctx, cancel, err := withTimeout(cmd, timeout)
			if err != nil {
				return err
			}
			defer cancel()
			client, err := dialAdmin(adminDir)
			if err != nil {
				return err
			}
			defer client.Close()
			ch, err := client.RemoveSSHUser(ctx, &pubapipb.RemoveSSHUserRequest{Name: name, Keys: keys})
			if err != nil {
				return rpcError("removing SSH user "+name, err)
			}
			out := cmd.OutOrStdout()
			if ch.GetUser() == nil {
				fmt.Fprintf(out, "removed SSH user %s at revision %d; every peer locks it and keeps its files\n", name, ch.GetRevision())
				return nil
			}
			fmt.Fprintf(out, "removed %d key(s) from SSH user %s (now %d) at revision %d\n", len(ch.GetKeys()), name, len(ch.GetUser().GetKeys()), ch.GetRevision())
			printKeys(out, ch.GetKeys())
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, `a key to remove: its fingerprint "SHA256:..." or its line (repeatable)`)
	addAdminDirFlag(cmd, &adminDir)
	addTimeoutFlag(cmd, &timeout, defaultCallTimeout, "give up after this long")
	return cmd
}

// dialAdmin connects to the coordinator of the admin bundle in dir.
func dialAdmin(dir string) (*pubapi.Client, error) {
	admin, err := openAdminDir(dir)
	if err != nil {
		return nil, err
	}
	return admin.dial()
}

func printKeys(out io.Writer, lines []string) {
	for _, line := range lines {
		k := sshKeyOf(line)
		fmt.Fprintf(out, "  %s %s %s\n", k.Type, k.Fingerprint, k.Comment)
	}
}
