package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
)

func newTLSCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tls", Short: "The cluster CA of the HTTPS API"}
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Print the cluster CA certificate (PEM), for clients to trust",
		Long: `Print the cluster CA certificate as PEM: clients of the HTTPS API
(--https-addr) trust it, e.g.

  rbee tls ca > rbee-ca.pem
  curl --cacert rbee-ca.pem https://node.lan:7843/v1/models -H "Authorization: Bearer $KEY"
  NODE_EXTRA_CA_CERTS=rbee-ca.pem ...       # Node.js clients
  rbee --node https://node.lan:7843 --ca rbee-ca.pem status

The certificate is public. From another machine, fetch it over HTTPS with the
fingerprint the first node printed; the CLI refuses a node whose chain comes
from another CA:

  rbee tls ca --node https://node.lan:7843 --ca-fingerprint sha256:… > rbee-ca.pem

-o json prints the fingerprint and validity too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := waitCtx(cmd.Context())
			defer cancel()
			info, err := g.client().CA(ctx, g.caFingerprint)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), info)
			}
			fmt.Fprint(cmd.OutOrStdout(), info.CertPEM)
			fmt.Fprintf(os.Stderr, "fingerprint %s, valid until %s\n", info.Fingerprint, info.NotAfter.Format(time.DateOnly))
			return nil
		},
	}
	cmd.AddCommand(ca)
	return cmd
}

func newAPIKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "apikey",
		Short: "API keys: credentials of clients on the LAN, scoped to inference, read or admin",
		Long: `API keys are what clients off the node's machine present (Authorization:
Bearer <key>; the CLI's --token or RBEE_TOKEN). A key is created once, shown
once, works on every node of the cluster (the registry keeps only its sha256),
and a revocation reaches every node within a second.

Scopes: inference (chat and completions, the model list), read (status,
lists, metrics), admin (everything). Creating, listing and revoking keys needs
the admin credential.`,
	}
	var name, scope string
	create := &cobra.Command{
		Use:   "create --name NAME --scope inference|read|admin",
		Short: "Create an API key and print it (shown this once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.APIKeyCreateRequest{Name: name, Scope: scope}, 30*time.Second, func(out io.Writer, res api.APIKeyCreated) error {
				fmt.Fprintln(out, res.Key)
				fmt.Fprintf(cmd.ErrOrStderr(), "API key %q (scope %s) created; it is shown only now: keep it in the client's configuration\n", res.Name, res.Scope)
				return nil
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "the key's name: 1-64 letters, digits, '-', '_', '.' (e.g. the client it is for)")
	create.Flags().StringVar(&scope, "scope", "", "what the key may do: inference, read or admin")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("scope")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the API keys (never the keys themselves)",
		Long:  "List the API keys: name, scope, creation time, and when the node answering last accepted each (every node keeps its own).",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.APIKeyListRequest{}, 30*time.Second, func(out io.Writer, res api.APIKeyListResult) error {
				var rows [][]string
				for _, k := range res.Keys {
					last := "-"
					if k.LastUsed != nil {
						last = k.LastUsed.Local().Format(time.DateTime)
					}
					rows = append(rows, []string{k.Name, k.Scope, k.Created.Local().Format(time.DateTime), last})
				}
				table(out, []string{"NAME", "SCOPE", "CREATED", "LAST USED"}, rows)
				return nil
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an API key on every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.APIKeyRevokeRequest{Name: args[0]}, 30*time.Second, func(out io.Writer, res api.APIKeyRevokeResult) error {
				fmt.Fprintf(out, "API key %q revoked\n", res.Revoked)
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
