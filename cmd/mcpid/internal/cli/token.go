package cli

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
)

func tokClient(c *grpc.ClientConn) tokenv1.TokenServiceClient {
	return tokenv1.NewTokenServiceClient(c)
}

func roles(rs []tokenv1.OperatorRole) string {
	var out []string
	for _, r := range rs {
		out = append(out, output.Enum(r.String(), "OPERATOR_ROLE_"))
	}
	return strings.Join(out, ",")
}

func userTable(w io.Writer, us []*tokenv1.User) error {
	t := output.NewTable(w, "USER ID", "USERNAME", "EMAIL", "ROLES", "DISABLED", "LAST LOGIN")
	for _, u := range us {
		dis := "no"
		if u.GetDisabled() {
			dis = "yes"
		}
		name := u.GetUsername()
		if name == "" && len(u.GetIdentities()) > 0 {
			name = u.GetIdentities()[0].GetConnectorId() + ":" + u.GetIdentities()[0].GetSubject()
		}
		t.Row(u.GetUserId(), name, u.GetEmail(), roles(u.GetRoles()), dis, output.Time(u.GetLastLoginTime()))
	}
	return t.Flush()
}

// readSecret reads a password from a file or stdin (never a flag).
func (a *app) readSecret(file string, stdin bool) (string, error) {
	var b []byte
	var err error
	switch {
	case file != "" && stdin:
		return "", usagef("give --password-file or --password-stdin, not both")
	case file != "":
		b, err = os.ReadFile(file)
	case stdin:
		b, err = io.ReadAll(io.LimitReader(a.d.Stdin, 4096))
	default:
		return "", nil
	}
	if err != nil {
		return "", usagef("reading the password: %v", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// resolveUser accepts a user id (usr_...) or a username.
func (a *app) resolveUser(ctx context.Context, ref string) (string, error) {
	if strings.HasPrefix(ref, "usr_") {
		return ref, nil
	}
	req := &tokenv1.ListUsersRequest{PageSize: 1000}
	for range maxPages {
		resp, err := call(ctx, a, svcToken, "looking up user "+ref, req, func(c *grpc.ClientConn) func(context.Context, *tokenv1.ListUsersRequest, ...grpc.CallOption) (*tokenv1.ListUsersResponse, error) {
			return tokClient(c).ListUsers
		})
		if err != nil {
			return "", err
		}
		for _, u := range resp.GetUsers() {
			if u.GetUsername() == ref {
				return u.GetUserId(), nil
			}
		}
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	return "", &callError{what: "looking up user " + ref, service: svcToken, st: statusNotFound("no user with username " + ref)}
}

func (a *app) usersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "users",
		Aliases: []string{"user"},
		Short:   "Manage users of the built-in directory",
		Long: `Manage the users who sign in to mcpid: built-in directory users (username and
password) and federated users created by identity connectors. Users are named
by user id (usr_...) or username. Operator roles (admin, auditor) let a user
run mcpid login. Passwords come from a file or stdin, never from a flag.`,
	}
	var email, display, passFile string
	var roleNames []string
	var passStdin bool
	create := &cobra.Command{
		Use:     "create USERNAME",
		Short:   "Create a built-in user",
		Long:    "Create a built-in directory user, optionally with operator roles and an initial password (12 to 128 characters). Without a password the user cannot sign in until reset-password.",
		Example: "  mcpid users create alice --email alice@example.com --role auditor --password-file pw.txt\n  echo 'correct horse battery' | mcpid users create bob --password-stdin",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.readSecret(passFile, passStdin)
			if err != nil {
				return err
			}
			u := &tokenv1.User{Username: args[0], Email: email, DisplayName: display}
			for _, r := range roleNames {
				n, err := enumValue("role", r, "OPERATOR_ROLE_", tokenv1.OperatorRole_value)
				if err != nil {
					return err
				}
				u.Roles = append(u.Roles, tokenv1.OperatorRole(n))
			}
			resp, err := call(cmd.Context(), a, svcToken, "creating user "+args[0], &tokenv1.CreateUserRequest{User: u, Password: pw}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.CreateUserRequest, ...grpc.CallOption) (*tokenv1.CreateUserResponse, error) {
				return tokClient(c).CreateUser
			})
			if err != nil {
				return err
			}
			if pw == "" {
				a.note("The user has no password yet: set one with `mcpid users reset-password %s --password-file FILE`.\n", args[0])
			}
			return a.out(resp.GetUser(), func(w io.Writer) error { return userTable(w, []*tokenv1.User{resp.GetUser()}) })
		},
	}
	create.Flags().StringVar(&email, "email", "", "e-mail address")
	create.Flags().StringVar(&display, "display-name", "", "name shown on the consent page")
	create.Flags().StringSliceVar(&roleNames, "role", nil, "operator role: admin or auditor (repeatable)")
	create.Flags().StringVar(&passFile, "password-file", "", "file holding the initial password")
	create.Flags().BoolVar(&passStdin, "password-stdin", false, "read the initial password from stdin")
	_ = create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"admin", "auditor"}, cobra.ShellCompDirectiveNoFileComp))

	var roleFilter, connector string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List users",
		Long:    "List users ordered by user id, built-in and federated, optionally only those holding a role or linked to a connector.",
		Example: "  mcpid users list\n  mcpid users list --role admin -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := enumValue("role", roleFilter, "OPERATOR_ROLE_", tokenv1.OperatorRole_value)
			if err != nil {
				return err
			}
			var all []*tokenv1.User
			req := &tokenv1.ListUsersRequest{PageSize: 500, Role: tokenv1.OperatorRole(r), ConnectorId: connector}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcToken, "listing users", req, func(c *grpc.ClientConn) func(context.Context, *tokenv1.ListUsersRequest, ...grpc.CallOption) (*tokenv1.ListUsersResponse, error) {
					return tokClient(c).ListUsers
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetUsers()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return userTable(w, all) })
		},
	}
	list.Flags().StringVar(&roleFilter, "role", "", "only users holding this role: admin, auditor")
	list.Flags().StringVar(&connector, "connector", "", "only users linked to this identity connector")

	get := &cobra.Command{
		Use:     "get USER",
		Short:   "Show one user",
		Long:    "Show one user by user id or username.",
		Example: "  mcpid users get demo",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, svcToken, "reading user "+args[0], &tokenv1.GetUserRequest{UserId: id}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.GetUserRequest, ...grpc.CallOption) (*tokenv1.GetUserResponse, error) {
				return tokClient(c).GetUser
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetUser(), func(w io.Writer) error { return userTable(w, []*tokenv1.User{resp.GetUser()}) })
		},
	}

	del := &cobra.Command{
		Use:     "delete USER",
		Aliases: []string{"rm"},
		Short:   "Delete a user and revoke all their grants",
		Long:    "Delete a user: sessions, consents and identities go, and every grant of the user is revoked. The last admin cannot be deleted.",
		Example: "  mcpid users delete bob",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = call(cmd.Context(), a, svcToken, "deleting user "+args[0], &tokenv1.DeleteUserRequest{UserId: id}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.DeleteUserRequest, ...grpc.CallOption) (*tokenv1.DeleteUserResponse, error) {
				return tokClient(c).DeleteUser
			})
			if err != nil {
				return err
			}
			a.done("Deleted user %s.\n", args[0])
			return nil
		},
	}

	var rpFile string
	var rpStdin bool
	reset := &cobra.Command{
		Use:     "reset-password USER",
		Short:   "Set a built-in user's password",
		Long:    "Set or reset a built-in user's password (12 to 128 characters, from a file or stdin), clear a lockout and end the user's sessions. Existing grants are kept.",
		Example: "  mcpid users reset-password alice --password-file pw.txt",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.readSecret(rpFile, rpStdin)
			if err != nil {
				return err
			}
			if pw == "" {
				return usagef("give the new password with --password-file or --password-stdin")
			}
			id, err := a.resolveUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, svcToken, "setting the password of "+args[0], &tokenv1.SetUserPasswordRequest{UserId: id, Password: pw}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.SetUserPasswordRequest, ...grpc.CallOption) (*tokenv1.SetUserPasswordResponse, error) {
				return tokClient(c).SetUserPassword
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetUser(), func(w io.Writer) error { return userTable(w, []*tokenv1.User{resp.GetUser()}) })
		},
	}
	reset.Flags().StringVar(&rpFile, "password-file", "", "file holding the new password")
	reset.Flags().BoolVar(&rpStdin, "password-stdin", false, "read the new password from stdin")

	var setRoles []string
	setRole := &cobra.Command{
		Use:     "set-roles USER",
		Short:   "Replace a user's operator roles",
		Long:    "Replace a user's operator roles (admin, auditor; none with --role \"\"). The user's admin tokens are revoked: new roles apply at the next mcpid login.",
		Example: "  mcpid users set-roles alice --role auditor",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := a.resolveUser(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			u := &tokenv1.User{UserId: id}
			for _, r := range setRoles {
				if r == "" {
					continue
				}
				n, err := enumValue("role", r, "OPERATOR_ROLE_", tokenv1.OperatorRole_value)
				if err != nil {
					return err
				}
				u.Roles = append(u.Roles, tokenv1.OperatorRole(n))
			}
			resp, err := call(cmd.Context(), a, svcToken, "setting the roles of "+args[0], &tokenv1.UpdateUserRequest{User: u, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}}}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.UpdateUserRequest, ...grpc.CallOption) (*tokenv1.UpdateUserResponse, error) {
				return tokClient(c).UpdateUser
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetUser(), func(w io.Writer) error { return userTable(w, []*tokenv1.User{resp.GetUser()}) })
		},
	}
	setRole.Flags().StringSliceVar(&setRoles, "role", nil, "operator role (repeatable)")
	_ = setRole.MarkFlagRequired("role")

	cmd.AddCommand(create, list, get, del, reset, setRole)
	return cmd
}

func grantTable(w io.Writer, gs []*tokenv1.Grant) error {
	t := output.NewTable(w, "GRANT ID", "TYPE", "USER", "CLIENT", "RESOURCE", "SCOPES", "CREATED", "LAST USED")
	for _, g := range gs {
		t.Row(g.GetGrantId(), output.Enum(g.GetGrantType().String(), "GRANT_TYPE_"), g.GetUserId(), g.GetClientId(),
			g.GetResource(), strings.Join(g.GetScopes(), " "), output.Time(g.GetCreateTime()), output.Time(g.GetLastUseTime()))
	}
	return t.Flush()
}

func (a *app) grantsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "grants",
		Aliases: []string{"grant"},
		Short:   "List and revoke grants (who gave which agent access to which MCP server)",
		Long: `A grant records one authorization: a user (or, for client_credentials, the
client itself), an agent (client), one MCP server (resource) and the scopes.
Every access token carries its grant id; revoking grants revokes their tokens
everywhere within a second (WatchRevocations).`,
	}
	var user, client, resource, gtype string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List live grants by user, client and/or resource",
		Long:    "List live grants, oldest first, filtered by user (id or username), client, resource and type.",
		Example: "  mcpid grants list --user alice\n  mcpid grants list --client my-agent --resource https://crm.example.com/mcp",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := enumValue("grant type", gtype, "GRANT_TYPE_", tokenv1.GrantType_value)
			if err != nil {
				return err
			}
			uid := user
			if uid != "" {
				if uid, err = a.resolveUser(cmd.Context(), user); err != nil {
					return err
				}
			}
			var all []*tokenv1.Grant
			req := &tokenv1.ListGrantsRequest{PageSize: 500, UserId: uid, ClientId: client, Resource: resource, GrantType: tokenv1.GrantType(t)}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcToken, "listing grants", req, func(c *grpc.ClientConn) func(context.Context, *tokenv1.ListGrantsRequest, ...grpc.CallOption) (*tokenv1.ListGrantsResponse, error) {
					return tokClient(c).ListGrants
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetGrants()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return grantTable(w, all) })
		},
	}
	list.Flags().StringVar(&user, "user", "", "only this user's grants (user id or username)")
	list.Flags().StringVar(&client, "client", "", "only grants held by this client")
	list.Flags().StringVar(&resource, "resource", "", "only grants for this resource (MCP server URI)")
	list.Flags().StringVar(&gtype, "type", "", "only grants of this type: authorization_code, client_credentials")

	var rUser, rClient, rResource, reason string
	revoke := &cobra.Command{
		Use:   "revoke [GRANT_ID] [--user USER | --client CLIENT | --resource URI]",
		Short: "Revoke one grant, or all of a user, a client or a resource",
		Long: `Revoke one grant by id, or every grant of a user, a client or a resource (exactly
one selector). All their tokens stop working everywhere; consents are kept.`,
		Example: "  mcpid grants revoke grt_01J...\n  mcpid grants revoke --user alice --reason \"left the company\"\n  mcpid grants revoke --client my-agent",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &tokenv1.RevokeGrantsRequest{Reason: reason}
			n := 0
			if len(args) == 1 {
				req.Selector = &tokenv1.RevokeGrantsRequest_GrantId{GrantId: args[0]}
				n++
			}
			if rUser != "" {
				uid, err := a.resolveUser(cmd.Context(), rUser)
				if err != nil {
					return err
				}
				req.Selector = &tokenv1.RevokeGrantsRequest_UserId{UserId: uid}
				n++
			}
			if rClient != "" {
				req.Selector = &tokenv1.RevokeGrantsRequest_ClientId{ClientId: rClient}
				n++
			}
			if rResource != "" {
				req.Selector = &tokenv1.RevokeGrantsRequest_Resource{Resource: rResource}
				n++
			}
			if n != 1 {
				return usagef("name exactly one of: a GRANT_ID, --user, --client, --resource")
			}
			resp, err := call(cmd.Context(), a, svcToken, "revoking grants", req, func(c *grpc.ClientConn) func(context.Context, *tokenv1.RevokeGrantsRequest, ...grpc.CallOption) (*tokenv1.RevokeGrantsResponse, error) {
				return tokClient(c).RevokeGrants
			})
			if err != nil {
				return err
			}
			return a.out(resp, func(w io.Writer) error {
				return output.KV(w, "revoked grants", itoa(int64(resp.GetRevokedGrantCount())), "issued before", output.Time(resp.GetIssuedBefore()), "revision", itoa(resp.GetRevision()))
			})
		},
	}
	revoke.Flags().StringVar(&rUser, "user", "", "revoke every grant of this user (id or username)")
	revoke.Flags().StringVar(&rClient, "client", "", "revoke every grant held by this client")
	revoke.Flags().StringVar(&rResource, "resource", "", "revoke every grant for this resource")
	revoke.Flags().StringVar(&reason, "reason", "", "recorded in the audit trail")
	cmd.AddCommand(list, revoke)
	return cmd
}

func keyTable(w io.Writer, ks []*tokenv1.SigningKey) error {
	t := output.NewTable(w, "KID", "ALG", "STATE", "CREATED", "ACTIVATES", "RETIRES")
	for _, k := range ks {
		t.Row(k.GetKid(), output.Enum(k.GetAlg().String(), "SIGNING_ALGORITHM_"), output.Enum(k.GetState().String(), "SIGNING_KEY_STATE_"),
			output.Time(k.GetCreateTime()), output.Time(k.GetActivateTime()), output.Time(k.GetRetireTime()))
	}
	return t.Flush()
}

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "keys",
		Aliases: []string{"key"},
		Short:   "List and rotate the access token signing keys",
		Long:    "The token service signs access tokens with keys kept encrypted in etcd and rotated with overlap: a new key is published in the JWKS before it signs.",
	}
	var state string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List signing keys and their rotation state",
		Long:    "List the signing keys, newest first: pending (published, not yet signing), active, retiring (still verifying), retired.",
		Example: "  mcpid keys list\n  mcpid keys list --state active -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := enumValue("state", state, "SIGNING_KEY_STATE_", tokenv1.SigningKeyState_value)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, svcToken, "listing signing keys", &tokenv1.ListSigningKeysRequest{State: tokenv1.SigningKeyState(s)}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.ListSigningKeysRequest, ...grpc.CallOption) (*tokenv1.ListSigningKeysResponse, error) {
				return tokClient(c).ListSigningKeys
			})
			if err != nil {
				return err
			}
			return a.out(output.List(resp.GetKeys()), func(w io.Writer) error { return keyTable(w, resp.GetKeys()) })
		},
	}
	list.Flags().StringVar(&state, "state", "", "only keys in this state: pending, active, retiring, retired")
	var alg, reason string
	var emergency bool
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Start a key rotation now",
		Long: `Start a signing key rotation now: a new key is published at once and signs one
JWKS cache lifetime later. --emergency (key compromise) makes the new key sign
at once and retires every other key of the algorithm: every token signed so far
stops verifying.`,
		Example: "  mcpid keys rotate\n  mcpid keys rotate --emergency --reason \"key exposed in incident 12\"",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			al, err := enumValue("algorithm", alg, "SIGNING_ALGORITHM_", tokenv1.SigningAlgorithm_value)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, svcToken, "rotating the signing key", &tokenv1.RotateSigningKeyRequest{Alg: tokenv1.SigningAlgorithm(al), Emergency: emergency, Reason: reason}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.RotateSigningKeyRequest, ...grpc.CallOption) (*tokenv1.RotateSigningKeyResponse, error) {
				return tokClient(c).RotateSigningKey
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetKey(), func(w io.Writer) error { return keyTable(w, []*tokenv1.SigningKey{resp.GetKey()}) })
		},
	}
	rotate.Flags().StringVar(&alg, "alg", "", "algorithm to rotate: es256, eddsa, rs256 (default: the configured default)")
	rotate.Flags().BoolVar(&emergency, "emergency", false, "replace every key at once (key compromise)")
	rotate.Flags().StringVar(&reason, "reason", "", "recorded in the audit trail")
	cmd.AddCommand(list, rotate)
	return cmd
}

func connectorTable(w io.Writer, cs []*tokenv1.Connector) error {
	t := output.NewTable(w, "ID", "NAME", "ENABLED", "ISSUER", "REDIRECT URI")
	for _, c := range cs {
		en := "no"
		if c.GetEnabled() {
			en = "yes"
		}
		t.Row(c.GetConnectorId(), c.GetDisplayName(), en, c.GetOidc().GetIssuerUrl(), c.GetRedirectUri())
	}
	return t.Flush()
}

func (a *app) connectorsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "connectors",
		Aliases: []string{"connector"},
		Short:   "Manage identity connectors (SSO through upstream OpenID Connect providers)",
		Long:    "Identity connectors let users sign in through upstream OpenID Connect providers (employees' SSO, partners). Several may be enabled at once.",
	}
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List connectors",
		Long:    "List identity connectors, ordered by id (never their secrets).",
		Example: "  mcpid connectors list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var all []*tokenv1.Connector
			req := &tokenv1.ListConnectorsRequest{PageSize: 500}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcToken, "listing connectors", req, func(c *grpc.ClientConn) func(context.Context, *tokenv1.ListConnectorsRequest, ...grpc.CallOption) (*tokenv1.ListConnectorsResponse, error) {
					return tokClient(c).ListConnectors
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetConnectors()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return connectorTable(w, all) })
		},
	}
	var name, issuer, clientID, secretFile, groupsPrefix string
	var scopes, domains, groups, realms, mappings []string
	var disabled, skipVerified bool
	add := &cobra.Command{
		Use:   "add ID --issuer-url URL --client-id ID",
		Short: "Add an OpenID Connect connector",
		Long: `Add an upstream OpenID Connect provider. Its discovery document is fetched and
checked first. Register the printed redirect URI at the provider. The client
secret is read from a file on every token replica (--client-secret-file), never
from a flag.`,
		Example: `  mcpid connectors add corp --name "Acme SSO" --issuer-url https://login.acme.com --client-id mcpid \
      --client-secret-file /run/secrets/acme --allowed-domain acme.com --role-mapping mcpid-admins=admin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			oidc := &tokenv1.OidcConnectorConfig{IssuerUrl: issuer, ClientId: clientID, Scopes: scopes, InsecureSkipEmailVerified: skipVerified}
			if secretFile != "" {
				oidc.ClientSecretSource = &tokenv1.OidcConnectorConfig_ClientSecretFile{ClientSecretFile: secretFile}
			}
			c := &tokenv1.Connector{ConnectorId: args[0], DisplayName: name, Enabled: !disabled,
				Config:              &tokenv1.Connector_Oidc{Oidc: oidc},
				AllowedEmailDomains: domains, AllowedGroups: groups, HomeRealmDomains: realms, GroupsPrefix: groupsPrefix}
			for _, m := range mappings {
				g, r, ok := strings.Cut(m, "=")
				if !ok {
					return usagef("--role-mapping %q: want GROUP=admin or GROUP=auditor", m)
				}
				n, err := enumValue("role", r, "OPERATOR_ROLE_", tokenv1.OperatorRole_value)
				if err != nil {
					return err
				}
				c.RoleMappings = append(c.RoleMappings, &tokenv1.GroupRoleMapping{Group: g, Role: tokenv1.OperatorRole(n)})
			}
			resp, err := call(cmd.Context(), a, svcToken, "adding connector "+args[0], &tokenv1.CreateConnectorRequest{Connector: c}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.CreateConnectorRequest, ...grpc.CallOption) (*tokenv1.CreateConnectorResponse, error) {
				return tokClient(c).CreateConnector
			})
			if err != nil {
				return err
			}
			return a.out(resp.GetConnector(), func(w io.Writer) error {
				return connectorTable(w, []*tokenv1.Connector{resp.GetConnector()})
			})
		},
	}
	f := add.Flags()
	f.StringVar(&name, "name", "", "name on the login page button (required)")
	f.StringVar(&issuer, "issuer-url", "", "upstream issuer URL, https (required)")
	f.StringVar(&clientID, "client-id", "", "client id registered at the upstream (required)")
	f.StringVar(&secretFile, "client-secret-file", "", "file holding the upstream client secret (omit for a public upstream client)")
	f.StringSliceVar(&scopes, "scope", nil, "upstream scopes (default openid,email,profile)")
	f.StringSliceVar(&domains, "allowed-domain", nil, "allow only e-mails of this domain (repeatable)")
	f.StringSliceVar(&groups, "allowed-group", nil, "allow only members of this upstream group (repeatable)")
	f.StringSliceVar(&realms, "home-realm-domain", nil, "send users with e-mails of this domain straight here (repeatable)")
	f.StringVar(&groupsPrefix, "groups-prefix", "", "prefix for upstream groups in tokens")
	f.StringArrayVar(&mappings, "role-mapping", nil, "GROUP=admin|auditor: operator role for members of an upstream group (repeatable)")
	f.BoolVar(&disabled, "disabled", false, "add it disabled")
	f.BoolVar(&skipVerified, "insecure-skip-email-verified", false, "accept e-mails without email_verified (IdPs that verify themselves)")
	_ = add.MarkFlagRequired("name")
	_ = add.MarkFlagRequired("issuer-url")
	_ = add.MarkFlagRequired("client-id")
	remove := &cobra.Command{
		Use:     "remove ID",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove a connector",
		Long:    "Remove a connector: no new sign-ins through it, and refreshing grants created through it fails. Linked users are kept.",
		Example: "  mcpid connectors remove corp",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd.Context(), a, svcToken, "removing connector "+args[0], &tokenv1.DeleteConnectorRequest{ConnectorId: args[0]}, func(c *grpc.ClientConn) func(context.Context, *tokenv1.DeleteConnectorRequest, ...grpc.CallOption) (*tokenv1.DeleteConnectorResponse, error) {
				return tokClient(c).DeleteConnector
			})
			if err != nil {
				return err
			}
			a.done("Removed connector %s.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, add, remove)
	return cmd
}
