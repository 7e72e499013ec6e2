package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
	policyv1 "github.com/mcpid/mcpid/gen/go/mcpid/policy/v1"
)

func polClient(c *grpc.ClientConn) policyv1.PolicyServiceClient {
	return policyv1.NewPolicyServiceClient(c)
}

// readYAMLMessage reads a YAML (or JSON) file, "-" for stdin, into m with
// protobuf JSON rules: unknown fields are an error, so a typo never
// silently drops a requirement.
func (a *app) readYAMLMessage(path string, m proto.Message) error {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(a.d.Stdin, 4<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return usagef("reading %s: %v", path, err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return usagef("%s is not valid YAML: %v", path, err)
	}
	if err := protojson.Unmarshal(j, m); err != nil {
		return usagef("%s: %v", path, err)
	}
	return nil
}

func (a *app) readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(io.LimitReader(a.d.Stdin, 64<<10))
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return "", usagef("reading the token: %v", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func parseArguments(s string) (*structpb.Struct, error) {
	if s == "" {
		return nil, nil
	}
	var st structpb.Struct
	j, err := yaml.YAMLToJSON([]byte(s))
	if err == nil {
		err = protojson.Unmarshal(j, &st)
	}
	if err != nil {
		return nil, usagef("--arguments: want a JSON object: %v", err)
	}
	return &st, nil
}

func policySummaryTable(w io.Writer, ps []*policyv1.PolicySummary) error {
	t := output.NewTable(w, "RESOURCE", "NAME", "STATE", "TOOLS", "DRIFT", "REVISION", "UPDATED")
	for _, p := range ps {
		t.Row(p.GetResource(), p.GetDisplayName(), output.Enum(p.GetState().String(), "RESOURCE_STATE_"),
			itoa(int64(p.GetToolCount())), itoa(int64(p.GetDriftCount())), itoa(p.GetRevision()), output.Time(p.GetUpdateTime()))
	}
	return t.Flush()
}

func effectiveTable(w io.Writer, e *policyv1.EffectivePolicy) error {
	t := output.NewTable(w, "TOOL", "REQUIRED SCOPES", "CONDITIONS", "VERIFIED CLIENT", "DENIED", "FROM")
	for _, tl := range e.GetTools() {
		from := []string{}
		if tl.GetInManifest() {
			from = append(from, "manifest")
		}
		if tl.GetInPolicy() {
			from = append(from, "policy")
		}
		t.Row(tl.GetName(), strings.Join(tl.GetRequiredScopes(), " "), itoa(int64(len(tl.GetConditions()))),
			yesNo(tl.GetRequireVerifiedClient()), yesNo(tl.GetDenied()), strings.Join(from, "+"))
	}
	return t.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func driftTable(w io.Writer, rs []*policyv1.DriftReport) error {
	t := output.NewTable(w, "RESOURCE", "KIND", "TOOL", "SCOPES", "DETAIL")
	for _, r := range rs {
		for _, it := range r.GetItems() {
			t.Row(r.GetResource(), output.Enum(it.GetKind().String(), "DRIFT_KIND_"), it.GetTool(), strings.Join(it.GetScopes(), " "), it.GetDetail())
		}
	}
	return t.Flush()
}

func checkResultKV(w io.Writer, r *policyv1.CheckResult) error {
	return output.KV(w, "tool", r.GetTool(), "decision", output.Enum(r.GetDecision().String(), "DECISION_"),
		"reason", output.Enum(r.GetReason().String(), "DECISION_REASON_"), "detail", r.GetReasonText(),
		"required scopes", strings.Join(r.GetRequiredScopes(), " "), "missing scopes", strings.Join(r.GetMissingScopes(), " "),
		"granted scopes", strings.Join(r.GetGrantedScopes(), " "), "policy revision", itoa(r.GetPolicyRevision()))
}

// denyErr turns a DENY into exit code 8 after the result was printed.
func denyErr(r *policyv1.CheckResult) error {
	if r.GetDecision() == policyv1.Decision_DECISION_ALLOW {
		return nil
	}
	return &negativeError{msg: fmt.Sprintf("decision: DENY (%s)", output.Enum(r.GetReason().String(), "DECISION_REASON_"))}
}

func (a *app) policiesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "policies",
		Aliases: []string{"policy"},
		Short:   "Manage MCP server policies (scopes, tools, conditions)",
		Long: `Each MCP server (resource) has a policy in two layers: the tool manifest the
server publishes (sdk/mcpguard) and the operator policy you apply here as YAML.
The operator layer can only add requirements; differences are drift. A
resource becomes known to the token service once an operator policy exists.`,
	}
	var file string
	var dryRun bool
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or replace a resource's operator policy from YAML",
		Long: `Create or replace the operator policy of the resource named in the file
(whole-document replace, validated first: scopes exist, conditions compile).
The file's revision field, as written by "get -o yaml", makes the write
conditional on nobody having changed the policy since. "-f -" reads stdin.`,
		Example: `  mcpid policies apply -f crm-policy.yaml
  mcpid policies apply -f crm-policy.yaml --dry-run
  mcpid policies get https://crm.example.com/mcp -o yaml > p.yaml && $EDITOR p.yaml && mcpid policies apply -f p.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("name the policy file with -f FILE (or -f - for stdin)")
			}
			var p policyv1.Policy
			if err := a.readYAMLMessage(file, &p); err != nil {
				return err
			}
			req := &policyv1.PutPolicyRequest{Policy: &p, ValidateOnly: dryRun}
			if p.GetRevision() != 0 {
				rev := p.GetRevision()
				req.ExpectedRevision = &rev
			}
			resp, err := call(cmd.Context(), a, svcPolicy, "applying the policy for "+p.GetResource(), req, func(c *grpc.ClientConn) func(context.Context, *policyv1.PutPolicyRequest, ...grpc.CallOption) (*policyv1.PutPolicyResponse, error) {
				return polClient(c).PutPolicy
			})
			if err != nil {
				return err
			}
			return a.out(resp, func(w io.Writer) error {
				verb := "applied"
				switch {
				case dryRun && resp.GetChanged():
					verb = "would change (dry run, nothing written)"
				case dryRun:
					verb = "unchanged (dry run)"
				case !resp.GetChanged():
					verb = "unchanged"
				}
				return output.KV(w, "resource", resp.GetPolicy().GetResource(), "result", verb,
					"revision", itoa(resp.GetPolicy().GetRevision()), "tools", itoa(int64(len(resp.GetEffective().GetTools()))),
					"drift items", itoa(int64(resp.GetDriftCount())))
			})
		},
	}
	apply.Flags().StringVarP(&file, "filename", "f", "", "policy YAML file, - for stdin (required)")
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "validate and show the result without writing")

	var effective bool
	get := &cobra.Command{
		Use:   "get RESOURCE",
		Short: "Show a resource's operator policy (or --effective merge)",
		Long: `Show the operator policy of a resource in the form apply accepts (use -o yaml to
edit and apply it back), or with --effective the merge of manifest and policy
that Check evaluates, with the origin of each tool.`,
		Example: "  mcpid policies get https://crm.example.com/mcp -o yaml\n  mcpid policies get https://crm.example.com/mcp --effective",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if effective {
				resp, err := call(cmd.Context(), a, svcPolicy, "reading the effective policy of "+args[0], &policyv1.GetEffectivePolicyRequest{Resource: args[0]}, func(c *grpc.ClientConn) func(context.Context, *policyv1.GetEffectivePolicyRequest, ...grpc.CallOption) (*policyv1.GetEffectivePolicyResponse, error) {
					return polClient(c).GetEffectivePolicy
				})
				if err != nil {
					return err
				}
				return a.out(resp.GetEffective(), func(w io.Writer) error { return effectiveTable(w, resp.GetEffective()) })
			}
			resp, err := call(cmd.Context(), a, svcPolicy, "reading the policy of "+args[0], &policyv1.GetPolicyRequest{Resource: args[0]}, func(c *grpc.ClientConn) func(context.Context, *policyv1.GetPolicyRequest, ...grpc.CallOption) (*policyv1.GetPolicyResponse, error) {
				return polClient(c).GetPolicy
			})
			if err != nil {
				return err
			}
			// A policy is a document: its table form is its YAML.
			if a.format == output.Table {
				return output.Structured(a.d.Stdout, output.YAML, resp.GetPolicy())
			}
			return output.Structured(a.d.Stdout, a.format, resp.GetPolicy())
		},
	}
	get.Flags().BoolVar(&effective, "effective", false, "show the merged policy Check evaluates")

	var state string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List resources with a policy or a manifest",
		Long:    "List every resource that has an operator policy (active) or only a manifest (pending), with tool and drift counts.",
		Example: "  mcpid policies list\n  mcpid policies list --state pending",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := enumValue("state", state, "RESOURCE_STATE_", policyv1.ResourceState_value)
			if err != nil {
				return err
			}
			var all []*policyv1.PolicySummary
			req := &policyv1.ListPoliciesRequest{PageSize: 500, State: policyv1.ResourceState(s)}
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcPolicy, "listing policies", req, func(c *grpc.ClientConn) func(context.Context, *policyv1.ListPoliciesRequest, ...grpc.CallOption) (*policyv1.ListPoliciesResponse, error) {
					return polClient(c).ListPolicies
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetPolicies()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return policySummaryTable(w, all) })
		},
	}
	list.Flags().StringVar(&state, "state", "", "only resources in this state: active, pending")

	del := &cobra.Command{
		Use:     "delete RESOURCE",
		Aliases: []string{"rm"},
		Short:   "Remove a resource (its policy and manifest)",
		Long:    "Remove a resource's operator policy and manifest: the token service then refuses it (invalid_target) and Check denies it. Issued tokens are not revoked: use `mcpid grants revoke --resource`.",
		Example: "  mcpid policies delete https://old.example.com/mcp",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := call(cmd.Context(), a, svcPolicy, "deleting the policy of "+args[0], &policyv1.DeletePolicyRequest{Resource: args[0]}, func(c *grpc.ClientConn) func(context.Context, *policyv1.DeletePolicyRequest, ...grpc.CallOption) (*policyv1.DeletePolicyResponse, error) {
				return polClient(c).DeletePolicy
			})
			if err != nil {
				return err
			}
			a.done("Deleted resource %s.\n", args[0])
			return nil
		},
	}

	drift := &cobra.Command{
		Use:     "drift [RESOURCE]",
		Short:   "Show differences between manifests and operator policies",
		Long:    "Show drift for one resource, or for every resource that has any: tools nobody reviewed, tools the manifest dropped, scopes added or undefined.",
		Example: "  mcpid policies drift\n  mcpid policies drift https://crm.example.com/mcp",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var reports []*policyv1.DriftReport
			if len(args) == 1 {
				resp, err := call(cmd.Context(), a, svcPolicy, "reading drift of "+args[0], &policyv1.GetDriftRequest{Resource: args[0]}, func(c *grpc.ClientConn) func(context.Context, *policyv1.GetDriftRequest, ...grpc.CallOption) (*policyv1.GetDriftResponse, error) {
					return polClient(c).GetDrift
				})
				if err != nil {
					return err
				}
				reports = append(reports, resp.GetReport())
			} else {
				req := &policyv1.ListDriftRequest{PageSize: 200}
				for range maxPages {
					resp, err := call(cmd.Context(), a, svcPolicy, "listing drift", req, func(c *grpc.ClientConn) func(context.Context, *policyv1.ListDriftRequest, ...grpc.CallOption) (*policyv1.ListDriftResponse, error) {
						return polClient(c).ListDrift
					})
					if err != nil {
						return err
					}
					reports = append(reports, resp.GetReports()...)
					if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
						break
					}
				}
			}
			return a.out(output.List(reports), func(w io.Writer) error { return driftTable(w, reports) })
		},
	}

	var tokenFile, claimsFile, args, candidate string
	var clientVerified bool
	var clientID string
	explain := &cobra.Command{
		Use:   "explain RESOURCE TOOL (--token-file FILE | --claims FILE)",
		Short: "Dry-run a decision and show every step",
		Long: `Explain what Check would decide for a token (or simulated claims) calling a
tool, evaluating every step even after a failure, optionally against a
candidate policy file (-f) instead of the stored one. Nothing is stored.
Exit code 8 when the decision is DENY.`,
		Example: `  mcpid policies explain https://crm.example.com/mcp export_contacts --token-file at.jwt
  mcpid policies explain https://crm.example.com/mcp export_contacts --claims claims.yaml --client-verified -f new-policy.yaml`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a2 []string) error {
			req := &policyv1.ExplainRequest{Resource: a2[0], Tool: a2[1]}
			var err error
			if req.Arguments, err = parseArguments(args); err != nil {
				return err
			}
			tok, err := a.readToken(tokenFile)
			if err != nil {
				return err
			}
			switch {
			case tok != "" && claimsFile != "":
				return usagef("give --token-file or --claims, not both")
			case tok != "":
				req.Token = &policyv1.ExplainRequest_AccessToken{AccessToken: tok}
			case claimsFile != "":
				var claims structpb.Struct
				if err := a.readYAMLMessage(claimsFile, &claims); err != nil {
					return err
				}
				req.Token = &policyv1.ExplainRequest_SimulatedToken{SimulatedToken: &policyv1.SimulatedToken{Claims: &claims,
					Client: &policyv1.ConditionClient{Id: clientID, Verified: clientVerified}}}
			default:
				return usagef("give the token to evaluate: --token-file FILE or --claims FILE")
			}
			if candidate != "" {
				var p policyv1.Policy
				if err := a.readYAMLMessage(candidate, &p); err != nil {
					return err
				}
				req.CandidatePolicy = &p
			}
			resp, err := call(cmd.Context(), a, svcPolicy, "explaining the decision", req, func(c *grpc.ClientConn) func(context.Context, *policyv1.ExplainRequest, ...grpc.CallOption) (*policyv1.ExplainResponse, error) {
				return polClient(c).Explain
			})
			if err != nil {
				return err
			}
			if err := a.out(resp, func(w io.Writer) error {
				t := output.NewTable(w, "STEP", "OUTCOME", "LAYER", "FIELD", "DETAIL")
				for _, s := range resp.GetTrace() {
					t.Row(output.Enum(s.GetKind().String(), "EVALUATION_STEP_KIND_"), output.Enum(s.GetOutcome().String(), "STEP_OUTCOME_"),
						output.Enum(s.GetLayer().String(), "LAYER_"), s.GetField(), s.GetDetail())
				}
				if err := t.Flush(); err != nil {
					return err
				}
				a.printf("\n")
				return checkResultKV(w, resp.GetResult())
			}); err != nil {
				return err
			}
			return denyErr(resp.GetResult())
		},
	}
	ef := explain.Flags()
	ef.StringVar(&tokenFile, "token-file", "", "file holding the access token (JWT), - for stdin")
	ef.StringVar(&claimsFile, "claims", "", "YAML/JSON file of claims to simulate instead of a token")
	ef.StringVar(&clientID, "client-id", "", "client id to simulate with --claims")
	ef.BoolVar(&clientVerified, "client-verified", false, "simulate a verified client with --claims")
	ef.StringVar(&args, "arguments", "", "tool arguments as a JSON object")
	ef.StringVarP(&candidate, "filename", "f", "", "candidate operator policy file to evaluate instead of the stored one")

	var cTokenFile, cArgs string
	check := &cobra.Command{
		Use:   "check RESOURCE TOOL --token-file FILE",
		Short: "Ask whether a token may call a tool (exit 8 on DENY)",
		Long: `Ask the policy service exactly what an MCP server asks on every tools/call:
may this access token call this tool (with these arguments)? Prints the
decision with its reason and missing scopes; exit code 8 when denied.`,
		Example: "  mcpid policies check https://crm.example.com/mcp list_contacts --token-file at.jwt\n  mcpid policies check https://crm.example.com/mcp export_contacts --token-file - --arguments '{\"limit\": 10}' < at.jwt",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a2 []string) error {
			tok, err := a.readToken(cTokenFile)
			if err != nil {
				return err
			}
			if tok == "" {
				return usagef("give the access token with --token-file FILE (or - for stdin)")
			}
			st, err := parseArguments(cArgs)
			if err != nil {
				return err
			}
			resp, err := call(cmd.Context(), a, svcPolicy, "checking the token", &policyv1.CheckRequest{AccessToken: tok, Resource: a2[0], Tool: a2[1], Arguments: st}, func(c *grpc.ClientConn) func(context.Context, *policyv1.CheckRequest, ...grpc.CallOption) (*policyv1.CheckResponse, error) {
				return polClient(c).Check
			})
			if err != nil {
				return err
			}
			if err := a.out(resp.GetResult(), func(w io.Writer) error { return checkResultKV(w, resp.GetResult()) }); err != nil {
				return err
			}
			return denyErr(resp.GetResult())
		},
	}
	check.Flags().StringVar(&cTokenFile, "token-file", "", "file holding the access token (JWT), - for stdin (required)")
	check.Flags().StringVar(&cArgs, "arguments", "", "tool arguments as a JSON object")

	cmd.AddCommand(apply, get, list, del, drift, explain, check)
	return cmd
}
