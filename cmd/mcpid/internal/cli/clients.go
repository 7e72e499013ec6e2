package cli

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
	registrationv1 "github.com/mcpid/mcpid/gen/go/mcpid/registration/v1"
)

func regClient(c *grpc.ClientConn) registrationv1.RegistrationServiceClient {
	return registrationv1.NewRegistrationServiceClient(c)
}

// enumFlag parses a lower-case enum name into its proto value.
func enumValue(kind, v, prefix string, values map[string]int32) (int32, error) {
	if v == "" {
		return 0, nil
	}
	n, ok := values[prefix+strings.ToUpper(strings.ReplaceAll(v, "-", "_"))]
	if !ok || n == 0 {
		var names []string
		for k, n := range values {
			if n != 0 {
				names = append(names, strings.ToLower(strings.TrimPrefix(k, prefix)))
			}
		}
		return 0, usagef("unknown %s %q (one of: %s)", kind, v, strings.Join(sortStrings(names), ", "))
	}
	return n, nil
}

func clientTable(w io.Writer, cs []*registrationv1.Client) error {
	t := output.NewTable(w, "CLIENT ID", "NAME", "SOURCE", "TYPE", "STATUS", "CREATED")
	for _, c := range cs {
		t.Row(c.GetClientId(), c.GetMetadata().GetClientName(),
			output.Enum(c.GetSource().String(), "CLIENT_SOURCE_"),
			output.Enum(c.GetClientType().String(), "CLIENT_TYPE_"),
			output.Enum(c.GetVerification().GetStatus().String(), "VERIFICATION_STATUS_"),
			output.Time(c.GetCreateTime()))
	}
	return t.Flush()
}

func clientDetail(w io.Writer, c *registrationv1.Client) error {
	var allowed []string
	for _, r := range c.GetAllowedResources() {
		allowed = append(allowed, r.GetResource()+" ["+strings.Join(r.GetScopes(), " ")+"]")
	}
	var grants []string
	for _, g := range c.GetMetadata().GetGrantTypes() {
		grants = append(grants, output.Enum(g.String(), "GRANT_TYPE_"))
	}
	v := c.GetVerification()
	return output.KV(w,
		"client id", c.GetClientId(),
		"name", c.GetMetadata().GetClientName(),
		"source", output.Enum(c.GetSource().String(), "CLIENT_SOURCE_"),
		"type", output.Enum(c.GetClientType().String(), "CLIENT_TYPE_"),
		"auth method", output.Enum(c.GetMetadata().GetTokenEndpointAuthMethod().String(), "TOKEN_ENDPOINT_AUTH_METHOD_"),
		"application type", output.Enum(c.GetMetadata().GetApplicationType().String(), "APPLICATION_TYPE_"),
		"grant types", output.Join(grants),
		"redirect uris", output.Join(c.GetMetadata().GetRedirectUris()),
		"status", output.Enum(v.GetStatus().String(), "VERIFICATION_STATUS_"),
		"verified by", output.Enum(v.GetMethod().String(), "VERIFICATION_METHOD_"),
		"status reason", v.GetReason(),
		"allowed resources", strings.Join(allowed, "; "),
		"resource server", c.GetResourceServer(),
		"created", output.Time(c.GetCreateTime()),
		"expires", output.Time(c.GetExpireTime()),
		"last used", output.Time(c.GetLastUsedTime()),
	)
}

// parseAllowed parses "URI=scope1,scope2" allow-list entries.
func parseAllowed(flag string, vals []string) ([]*registrationv1.AllowedResource, error) {
	var out []*registrationv1.AllowedResource
	for _, v := range vals {
		res, scopes, ok := strings.Cut(v, "=")
		if !ok || res == "" {
			return nil, usagef("--%s %q: want RESOURCE=scope1,scope2", flag, v)
		}
		var ss []string
		for _, s := range strings.Split(scopes, ",") {
			if s = strings.TrimSpace(s); s != "" {
				ss = append(ss, s)
			}
		}
		out = append(out, &registrationv1.AllowedResource{Resource: res, Scopes: ss})
	}
	return out, nil
}

func (a *app) clientsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "clients",
		Aliases: []string{"client"},
		Short:   "Manage OAuth clients (agents)",
		Long: `Manage the OAuth clients (agents) the registration service knows: those
created by operators, registered dynamically (RFC 7591) or by Client ID
Metadata Document, and the pre-registered mcpid CLI client. Reading needs the
auditor or admin role; every change needs admin.`,
	}
	cmd.AddCommand(a.clientsList(), a.clientsGet(), a.clientsCreate(), a.clientsDelete(),
		a.clientsSetStatus("verify", registrationv1.VerificationStatus_VERIFICATION_STATUS_VERIFIED, "Mark a client verified (operator-approved)"),
		a.clientsSetStatus("unverify", registrationv1.VerificationStatus_VERIFICATION_STATUS_UNVERIFIED, "Mark a client unverified"),
		a.clientsSetStatus("suspend", registrationv1.VerificationStatus_VERIFICATION_STATUS_SUSPENDED, "Suspend a client: refuse it everything and revoke its grants"),
		a.clientsRotateSecret(), a.iatCommand())
	return cmd
}

func (a *app) clientsList() *cobra.Command {
	var source, st string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List clients",
		Long:    "List clients ordered by client id, optionally only of one source or verification status. Follows every page.",
		Example: "  mcpid clients list\n  mcpid clients list --source dcr --status unverified -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			src, err := enumValue("source", source, "CLIENT_SOURCE_", registrationv1.ClientSource_value)
			if err != nil {
				return err
			}
			vs, err := enumValue("status", st, "VERIFICATION_STATUS_", registrationv1.VerificationStatus_value)
			if err != nil {
				return err
			}
			var all []*registrationv1.Client
			req := &registrationv1.ListClientsRequest{Source: registrationv1.ClientSource(src), VerificationStatus: registrationv1.VerificationStatus(vs), PageSize: 500}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcRegistration, "listing clients", req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.ListClientsRequest, ...grpc.CallOption) (*registrationv1.ListClientsResponse, error) {
					return regClient(c).ListClients
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetClients()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return clientTable(w, all) })
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "only clients of this source: cimd, dcr, operator, pre-registered")
	cmd.Flags().StringVar(&st, "status", "", "only clients with this status: verified, unverified, suspended")
	_ = cmd.RegisterFlagCompletionFunc("source", cobra.FixedCompletions([]string{"cimd", "dcr", "operator", "pre-registered"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"verified", "unverified", "suspended"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// maxPages bounds every pagination loop (at 500 per page, far beyond any
// listing a terminal should print).
const maxPages = 10000

func (a *app) clientsGet() *cobra.Command {
	return &cobra.Command{
		Use:     "get CLIENT_ID",
		Short:   "Show one client",
		Long:    "Show one client as stored: metadata, verification, allow-list, secret state (never the secret).",
		Example: "  mcpid clients get mcpid\n  mcpid clients get my-agent -o yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, svcRegistration, "reading client "+args[0], &registrationv1.GetClientRequest{ClientId: args[0]}, func(c *grpc.ClientConn) func(context.Context, *registrationv1.GetClientRequest, ...grpc.CallOption) (*registrationv1.GetClientResponse, error) {
				return regClient(c).GetClient
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetClient(), func(w io.Writer) error { return clientDetail(w, resp.GetClient()) })
		},
	}
}

func (a *app) clientsCreate() *cobra.Command {
	var (
		id, name, authMethod, appType, scope, resourceServer string
		redirects, grantTypes, allowed, contacts             []string
		expireIn, secretLifetime                             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a client as an operator",
		Long: `Create a client: a pre-registered web or native app (authorization code with
PKCE), a confidential machine client (client_credentials with an explicit
allow-list of resources and scopes), or an MCP server's own identity
(--resource-server). Operator-created clients start verified. For
client_secret_basic/post the generated secret is printed once: store it now.`,
		Example: `  mcpid clients create --id inspector --name "MCP Inspector" --auth-method none --redirect-uri http://127.0.0.1/callback
  mcpid clients create --id billing-bot --name "Billing bot" --auth-method client_secret_basic \
      --grant-type client_credentials --allowed-resource https://crm.example.com/mcp=crm:contacts.read`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			am, err := enumValue("auth method", authMethod, "TOKEN_ENDPOINT_AUTH_METHOD_", registrationv1.TokenEndpointAuthMethod_value)
			if err != nil {
				return err
			}
			at, err := enumValue("application type", appType, "APPLICATION_TYPE_", registrationv1.ApplicationType_value)
			if err != nil {
				return err
			}
			md := &registrationv1.ClientMetadata{RedirectUris: redirects, TokenEndpointAuthMethod: registrationv1.TokenEndpointAuthMethod(am),
				ApplicationType: registrationv1.ApplicationType(at), ClientName: name, Scope: scope, Contacts: contacts}
			for _, g := range grantTypes {
				n, err := enumValue("grant type", g, "GRANT_TYPE_", registrationv1.GrantType_value)
				if err != nil {
					return err
				}
				md.GrantTypes = append(md.GrantTypes, registrationv1.GrantType(n))
			}
			ar, err := parseAllowed("allowed-resource", allowed)
			if err != nil {
				return err
			}
			req := &registrationv1.CreateClientRequest{ClientId: id, Metadata: md, AllowedResources: ar, ResourceServer: resourceServer}
			if expireIn > 0 {
				req.ExpireTime = timestamp(a.d.Now().Add(expireIn))
			}
			if secretLifetime > 0 {
				req.SecretLifetime = durationpb.New(secretLifetime)
			}
			resp, err := call(cmd.Context(), a, svcRegistration, "creating the client", req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.CreateClientRequest, ...grpc.CallOption) (*registrationv1.CreateClientResponse, error) {
				return regClient(c).CreateClient
			})
			if err != nil {
				return err
			}
			return a.out(resp, func(w io.Writer) error {
				if err := clientDetail(w, resp.GetClient()); err != nil {
					return err
				}
				if resp.GetClientSecret() != "" {
					a.printf("\nclient secret: %s\n", resp.GetClientSecret())
					a.note("The client secret is shown only now: store it safely.\n")
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "client_id, 3-128 of [A-Za-z0-9._~-] (default: generated)")
	f.StringVar(&name, "name", "", "client name shown on the consent page")
	f.StringVar(&authMethod, "auth-method", "", "token endpoint auth method: none, client_secret_basic, client_secret_post, private_key_jwt (required)")
	f.StringVar(&appType, "application-type", "", "web or native (default: inferred from the redirect URIs)")
	f.StringSliceVar(&redirects, "redirect-uri", nil, "redirect URI (repeatable)")
	f.StringSliceVar(&grantTypes, "grant-type", nil, "grant type: authorization_code, refresh_token, client_credentials (repeatable; default authorization_code)")
	f.StringVar(&scope, "scope", "", "space-separated scopes the client says it will request")
	f.StringSliceVar(&contacts, "contact", nil, "contact e-mail (repeatable)")
	f.StringArrayVar(&allowed, "allowed-resource", nil, "client_credentials allow-list entry RESOURCE=scope1,scope2 (repeatable)")
	f.StringVar(&resourceServer, "resource-server", "", "make the client the identity of this MCP server (canonical resource URI)")
	f.DurationVar(&expireIn, "expire-in", 0, "delete the client after this long (default never)")
	f.DurationVar(&secretLifetime, "secret-lifetime", 0, "lifetime of the generated secret (default: the server's)")
	_ = cmd.MarkFlagRequired("auth-method")
	_ = cmd.RegisterFlagCompletionFunc("auth-method", cobra.FixedCompletions([]string{"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("grant-type", cobra.FixedCompletions([]string{"authorization_code", "refresh_token", "client_credentials"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) clientsDelete() *cobra.Command {
	var etag string
	cmd := &cobra.Command{
		Use:     "delete CLIENT_ID",
		Aliases: []string{"rm"},
		Short:   "Delete a client and revoke its grants",
		Long:    "Delete a client with its secret; the token service revokes its grants and consents. A deleted CIMD client comes back at its next use: suspend it to keep it out.",
		Example: "  mcpid clients delete old-agent",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd.Context(), a, svcRegistration, "deleting client "+args[0], &registrationv1.DeleteClientRequest{ClientId: args[0], Etag: etag}, func(c *grpc.ClientConn) func(context.Context, *registrationv1.DeleteClientRequest, ...grpc.CallOption) (*registrationv1.DeleteClientResponse, error) {
				return regClient(c).DeleteClient
			})
			if err != nil {
				return err
			}
			a.done("Deleted client %s.\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&etag, "etag", "", "delete only if the client is unchanged since it had this etag")
	return cmd
}

// done prints a confirmation for people; with -o json/yaml it prints
// {"result": "..."} so scripts always get parseable output.
func (a *app) done(format string, args ...any) {
	if a.format == output.Table {
		a.printf(format, args...)
		return
	}
	_ = output.Structured(a.d.Stdout, a.format, map[string]any{"result": strings.TrimSpace(sprintf(format, args...))})
}

func (a *app) clientsSetStatus(use string, st registrationv1.VerificationStatus, short string) *cobra.Command {
	var reason, etag string
	cmd := &cobra.Command{
		Use:     use + " CLIENT_ID --reason TEXT",
		Short:   short,
		Long:    short + ". The reason is recorded with the status and in the audit trail. Suspension revokes the client's grants and consents; leaving it restores nothing.",
		Example: "  mcpid clients " + use + " my-agent --reason \"ticket SEC-42\"",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &registrationv1.SetClientVerificationRequest{ClientId: args[0], Status: st, Reason: reason, Etag: etag}
			resp, err := call(cmd.Context(), a, svcRegistration, use+" client "+args[0], req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.SetClientVerificationRequest, ...grpc.CallOption) (*registrationv1.SetClientVerificationResponse, error) {
				return regClient(c).SetClientVerification
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetClient(), func(w io.Writer) error { return clientTable(w, []*registrationv1.Client{resp.GetClient()}) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	cmd.Flags().StringVar(&etag, "etag", "", "act only if the client is unchanged since it had this etag")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func (a *app) clientsRotateSecret() *cobra.Command {
	var grace, lifetime time.Duration
	cmd := &cobra.Command{
		Use:     "rotate-secret CLIENT_ID",
		Short:   "Generate a new client secret (shown once)",
		Long:    "Generate a new secret for a client_secret_basic/post client and print it once. The previous secret stops working at once, or after --grace.",
		Example: "  mcpid clients rotate-secret billing-bot --grace 1h",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &registrationv1.RotateClientSecretRequest{ClientId: args[0]}
			if grace > 0 {
				req.PreviousSecretGrace = durationpb.New(grace)
			}
			if lifetime > 0 {
				req.SecretLifetime = durationpb.New(lifetime)
			}
			resp, err := call(cmd.Context(), a, svcRegistration, "rotating the secret of "+args[0], req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.RotateClientSecretRequest, ...grpc.CallOption) (*registrationv1.RotateClientSecretResponse, error) {
				return regClient(c).RotateClientSecret
			})
			if err != nil {
				return err
			}
			return a.out(resp, func(io.Writer) error {
				a.printf("client secret: %s\n", resp.GetClientSecret())
				a.note("The client secret is shown only now: store it safely.\n")
				return nil
			})
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "keep the previous secret valid this long (at most 720h)")
	cmd.Flags().DurationVar(&lifetime, "secret-lifetime", 0, "lifetime of the new secret (default: the server's)")
	return cmd
}

func (a *app) iatCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "initial-access-tokens",
		Aliases: []string{"iat"},
		Short:   "Manage initial access tokens for dynamic registration",
		Long:    "Initial access tokens let clients register dynamically (RFC 7591) where registration requires one. The token value is shown once, at creation.",
	}
	var note string
	var ttl time.Duration
	var maxUses int32
	var ccRes []string
	create := &cobra.Command{
		Use:     "create",
		Short:   "Create an initial access token (shown once)",
		Long:    "Create an initial access token for POST /oauth2/register (Authorization: Bearer <token>). With --client-credentials-resource, clients registered with it may use client_credentials for those resources and scopes.",
		Example: "  mcpid clients iat create --max-uses 10 --ttl 24h --note \"team X agents\"",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ar, err := parseAllowed("client-credentials-resource", ccRes)
			if err != nil {
				return err
			}
			req := &registrationv1.CreateInitialAccessTokenRequest{Note: note, MaxUses: maxUses, ClientCredentialsResources: ar}
			if ttl > 0 {
				req.Ttl = durationpb.New(ttl)
			}
			resp, err := call(cmd.Context(), a, svcRegistration, "creating the initial access token", req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.CreateInitialAccessTokenRequest, ...grpc.CallOption) (*registrationv1.CreateInitialAccessTokenResponse, error) {
				return regClient(c).CreateInitialAccessToken
			})
			if err != nil {
				return err
			}
			return a.out(resp, func(w io.Writer) error {
				if err := iatTable(w, []*registrationv1.InitialAccessToken{resp.GetInitialAccessToken()}); err != nil {
					return err
				}
				a.printf("\ntoken: %s\n", resp.GetToken())
				a.note("The token is shown only now: store it safely.\n")
				return nil
			})
		},
	}
	create.Flags().StringVar(&note, "note", "", "what the token is for")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default 24h)")
	create.Flags().Int32Var(&maxUses, "max-uses", 1, "maximum number of registrations")
	create.Flags().StringArrayVar(&ccRes, "client-credentials-resource", nil, "RESOURCE=scope1,scope2 allowed to clients registered with it (repeatable)")
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List initial access tokens (never their values)",
		Long:    "List initial access tokens, newest first; expired ones are gone, revoked and exhausted ones are listed until they expire.",
		Example: "  mcpid clients iat list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var all []*registrationv1.InitialAccessToken
			req := &registrationv1.ListInitialAccessTokensRequest{PageSize: 500}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcRegistration, "listing initial access tokens", req, func(c *grpc.ClientConn) func(context.Context, *registrationv1.ListInitialAccessTokensRequest, ...grpc.CallOption) (*registrationv1.ListInitialAccessTokensResponse, error) {
					return regClient(c).ListInitialAccessTokens
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetInitialAccessTokens()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return iatTable(w, all) })
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke an initial access token",
		Long:    "Revoke an initial access token by its id (not its value). Clients already registered with it are unaffected.",
		Example: "  mcpid clients iat revoke iat_01J...",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, svcRegistration, "revoking initial access token "+args[0], &registrationv1.RevokeInitialAccessTokenRequest{Id: args[0]}, func(c *grpc.ClientConn) func(context.Context, *registrationv1.RevokeInitialAccessTokenRequest, ...grpc.CallOption) (*registrationv1.RevokeInitialAccessTokenResponse, error) {
				return regClient(c).RevokeInitialAccessToken
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetInitialAccessToken(), func(w io.Writer) error {
				return iatTable(w, []*registrationv1.InitialAccessToken{resp.GetInitialAccessToken()})
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func iatTable(w io.Writer, ts []*registrationv1.InitialAccessToken) error {
	t := output.NewTable(w, "ID", "STATE", "USES", "NOTE", "EXPIRES")
	for _, x := range ts {
		t.Row(x.GetId(), output.Enum(x.GetState().String(), "INITIAL_ACCESS_TOKEN_STATE_"),
			itoa(int64(x.GetUseCount()))+"/"+itoa(int64(x.GetMaxUses())), x.GetNote(), output.Time(x.GetExpireTime()))
	}
	return t.Flush()
}
