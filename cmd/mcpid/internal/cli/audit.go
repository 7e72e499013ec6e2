package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mcpid/mcpid/cmd/mcpid/internal/output"
	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
)

func audClient(c *grpc.ClientConn) auditv1.AuditServiceClient {
	return auditv1.NewAuditServiceClient(c)
}

// eventFilterFlags are the filters shared by query, tail and export.
type eventFilterFlags struct {
	types, clients, users, resources, tools []string
	decision, trace                         string
	grants                                  []string
}

func (f *eventFilterFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.types, "type", nil, "event type, e.g. policy.decision, token.issued, client.registered (repeatable)")
	fl.StringSliceVar(&f.clients, "client", nil, "client id (repeatable)")
	fl.StringSliceVar(&f.users, "user", nil, "user id (repeatable)")
	fl.StringSliceVar(&f.resources, "resource", nil, "resource URI (repeatable)")
	fl.StringSliceVar(&f.tools, "tool", nil, "tool name (repeatable)")
	fl.StringSliceVar(&f.grants, "grant", nil, "grant id (repeatable)")
	fl.StringVar(&f.decision, "decision", "", "only policy decisions: allow or deny")
	fl.StringVar(&f.trace, "trace-id", "", "every event of one request (W3C trace id)")
	_ = cmd.RegisterFlagCompletionFunc("type", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return allEventTypes(), cobra.ShellCompDirectiveNoFileComp
	})
	_ = cmd.RegisterFlagCompletionFunc("decision", cobra.FixedCompletions([]string{"allow", "deny"}, cobra.ShellCompDirectiveNoFileComp))
}

// eventTypeName is the dotted name used in the docs: client.registered.
func eventTypeName(t auditv1.EventType) string {
	s := strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_"))
	for _, prefix := range []string{"client_secret", "client", "login", "user", "consent", "token", "grant", "refresh_token", "authorization_code", "key", "policy", "tool_manifest", "personal_data", "admin"} {
		if strings.HasPrefix(s, prefix+"_") {
			return prefix + "." + strings.TrimPrefix(s, prefix+"_")
		}
	}
	return s
}

func parseEventType(v string) (auditv1.EventType, error) {
	for name, n := range auditv1.EventType_value {
		t := auditv1.EventType(n)
		if n != 0 && (eventTypeName(t) == v || strings.EqualFold(name, v) || strings.EqualFold(strings.TrimPrefix(name, "EVENT_TYPE_"), strings.ReplaceAll(v, ".", "_"))) {
			return t, nil
		}
	}
	return 0, usagef("unknown event type %q (see `mcpid audit query --help`; e.g. policy.decision)", v)
}

func (f *eventFilterFlags) filter() (*auditv1.EventFilter, error) {
	out := &auditv1.EventFilter{ClientIds: f.clients, UserIds: f.users, Resources: f.resources, Tools: f.tools, GrantIds: f.grants, TraceId: f.trace}
	for _, t := range f.types {
		et, err := parseEventType(t)
		if err != nil {
			return nil, err
		}
		out.Types = append(out.Types, et)
	}
	d, err := enumValue("decision", f.decision, "DECISION_", auditv1.Decision_value)
	if err != nil {
		return nil, err
	}
	out.Decision = auditv1.Decision(d)
	return out, nil
}

func eventRow(t *output.TableWriter, e *auditv1.Event) {
	actor := output.Enum(e.GetActor().GetKind().String(), "ACTOR_KIND_")
	if id := e.GetActor().GetId(); id != "" {
		actor += ":" + id
	}
	what := e.GetResource()
	if e.GetTool() != "" {
		what += " " + e.GetTool()
	}
	t.Row(utoa(e.GetSequence()), output.Time(e.GetTime()), eventTypeName(e.GetType()), actor, e.GetClientId(), e.GetUserId(),
		strings.TrimSpace(what), output.Enum(e.GetDecision().String(), "DECISION_"), e.GetReason())
}

var eventHeaders = []string{"SEQ", "TIME", "TYPE", "ACTOR", "CLIENT", "USER", "RESOURCE/TOOL", "DECISION", "REASON"}

func eventTable(w io.Writer, es []*auditv1.Event) error {
	t := output.NewTable(w, eventHeaders...)
	for _, e := range es {
		eventRow(t, e)
	}
	return t.Flush()
}

func (a *app) auditCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Query, follow, verify and export the audit trail",
		Long: `The audit trail is one hash chain of events from every service, with signed
checkpoints of its head. Query it with filters, follow it live, verify that
nothing was edited or cut, and export it as JSON lines. Needs the auditor or
admin role.

Event types: ` + strings.Join(allEventTypes(), ", ") + `.`,
	}
	cmd.AddCommand(a.auditQuery(), a.auditTail(), a.auditVerify(), a.auditExport())
	return cmd
}

func allEventTypes() []string {
	var out []string
	for n := int32(1); ; n++ {
		if _, ok := auditv1.EventType_name[n]; !ok {
			break
		}
		out = append(out, eventTypeName(auditv1.EventType(n)))
	}
	return out
}

func (a *app) auditQuery() *cobra.Command {
	var f eventFilterFlags
	var since, until string
	var limit int
	var oldestFirst bool
	cmd := &cobra.Command{
		Use:     "query",
		Short:   "Query retained events with filters",
		Long:    "Query the events retained in etcd, newest first, with filters on type, client, user, resource, tool, decision, grant, trace and time. Older events are in the JSON-lines archive.",
		Example: "  mcpid audit query --type policy.decision --decision deny --since 1h\n  mcpid audit query --client my-agent --limit 20 -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.filter()
			if err != nil {
				return err
			}
			req := &auditv1.QueryEventsRequest{Filter: filter, PageSize: 1000}
			if oldestFirst {
				req.Order = auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST
			}
			tr := &auditv1.TimeRange{}
			if tr.StartTime, err = parseSince("since", since, a.d.Now()); err != nil {
				return err
			}
			if tr.EndTime, err = parseSince("until", until, a.d.Now()); err != nil {
				return err
			}
			if tr.StartTime != nil || tr.EndTime != nil {
				req.TimeRange = tr
			}
			var all []*auditv1.Event
			for range maxPages {
				if limit > 0 && limit-len(all) < int(req.PageSize) {
					req.PageSize = int32(limit - len(all))
				}
				resp, err := call(cmd.Context(), a, svcAudit, "querying the audit trail", req, func(c *grpc.ClientConn) func(context.Context, *auditv1.QueryEventsRequest, ...grpc.CallOption) (*auditv1.QueryEventsResponse, error) {
					return audClient(c).QueryEvents
				})
				if err != nil {
					return err
				}
				all = append(all, resp.GetEvents()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" || (limit > 0 && len(all) >= limit) {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return eventTable(w, all) })
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&since, "since", "", "only events at or after this time (10m, 24h, or RFC 3339)")
	cmd.Flags().StringVar(&until, "until", "", "only events before this time (duration ago or RFC 3339)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (0: all retained)")
	cmd.Flags().BoolVar(&oldestFirst, "oldest-first", false, "ascending order")
	return cmd
}

func (a *app) auditTail() *cobra.Command {
	var f eventFilterFlags
	var follow bool
	var since string
	var n int
	var after uint64
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Show the latest events; -f follows the trail live",
		Long: `Show the latest events, oldest of them first. With -f the command keeps
following new events as they are chained (Ctrl-C stops); --since replays from a
time before following. Each line is one event; -o json prints one JSON object
per line. If the connection drops, tail -f resumes where it stopped without
gap or duplicate.`,
		Example: "  mcpid audit tail\n  mcpid audit tail -f\n  mcpid audit tail -f --type policy.decision --decision deny\n  mcpid audit tail -f --since 10m -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.filter()
			if err != nil {
				return err
			}
			if !follow {
				req := &auditv1.QueryEventsRequest{Filter: filter, PageSize: int32(n)}
				if req.TimeRange = nil; since != "" {
					st, err := parseSince("since", since, a.d.Now())
					if err != nil {
						return err
					}
					req.TimeRange = &auditv1.TimeRange{StartTime: st}
				}
				resp, err := call(cmd.Context(), a, svcAudit, "reading the audit trail", req, func(c *grpc.ClientConn) func(context.Context, *auditv1.QueryEventsRequest, ...grpc.CallOption) (*auditv1.QueryEventsResponse, error) {
					return audClient(c).QueryEvents
				})
				if err != nil {
					return err
				}
				es := resp.GetEvents()
				slices.Reverse(es)
				return a.out(output.List(es), func(w io.Writer) error { return eventTable(w, es) })
			}
			return a.follow(cmd.Context(), filter, since, after)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep following new events")
	cmd.Flags().StringVar(&since, "since", "", "start at this time (10m, 24h, or RFC 3339)")
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "number of latest events to show without -f")
	cmd.Flags().Uint64Var(&after, "after-sequence", 0, "with -f: resume after this sequence")
	return cmd
}

// follow streams events, reconnecting from the last sequence seen when the
// stream ends with UNAVAILABLE (a replica shutting down).
func (a *app) follow(ctx context.Context, filter *auditv1.EventFilter, since string, after uint64) error {
	c, err := a.conn(ctx, svcAudit)
	if err != nil {
		return err
	}
	req := &auditv1.TailEventsRequest{Filter: filter}
	switch {
	case after > 0:
		req.Start = &auditv1.TailEventsRequest_AfterSequence{AfterSequence: after}
	case since != "":
		st, err := parseSince("since", since, a.d.Now())
		if err != nil {
			return err
		}
		req.Start = &auditv1.TailEventsRequest_SinceTime{SinceTime: st}
	}
	var table *output.TableWriter
	if a.format == output.Table {
		table = output.NewTable(a.d.Stdout, eventHeaders...)
		_ = table.Flush()
	}
	for retries := 0; retries < 100; retries++ {
		stream, err := audClient(c).TailEvents(ctx, req)
		if err != nil {
			return a.wrap(svcAudit, "following the audit trail", err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, io.EOF) {
					return nil
				}
				if status.Code(err) == codes.Unavailable && req.GetStart() != nil {
					break // resume from the last sequence
				}
				return a.wrap(svcAudit, "following the audit trail", err)
			}
			var seq uint64
			switch it := resp.GetItem().(type) {
			case *auditv1.TailEventsResponse_Event:
				seq = it.Event.GetSequence()
				if err := a.printEvent(table, it.Event); err != nil {
					return err
				}
			case *auditv1.TailEventsResponse_Progress:
				seq = it.Progress.GetSequence()
			}
			if seq > 0 {
				req.Start = &auditv1.TailEventsRequest_AfterSequence{AfterSequence: seq}
			}
		}
	}
	return fmt.Errorf("following the audit trail: gave up after repeated disconnections")
}

// printEvent writes one event as it arrives: a table row flushed at once,
// or one JSON (or YAML document) per event.
func (a *app) printEvent(t *output.TableWriter, e *auditv1.Event) error {
	switch a.format {
	case output.Table:
		// Each row is flushed alone: live output cannot wait for the
		// widest row, so columns are aligned per line by fixed widths.
		fmt.Fprintf(a.d.Stdout, "%-6s  %-20s  %-22s  %-28s  %-20s  %s\n", utoa(e.GetSequence()), output.Time(e.GetTime()), eventTypeName(e.GetType()),
			actorString(e), dash(e.GetClientId()), dash(strings.TrimSpace(e.GetResource()+" "+e.GetTool()+" "+output.Enum(e.GetDecision().String(), "DECISION_"))))
		_ = t
		return nil
	case output.JSON:
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.d.Stdout, "%s\n", b)
		return err
	default:
		fmt.Fprintln(a.d.Stdout, "---")
		return output.Structured(a.d.Stdout, output.YAML, e)
	}
}

func actorString(e *auditv1.Event) string {
	s := output.Enum(e.GetActor().GetKind().String(), "ACTOR_KIND_")
	if id := e.GetActor().GetId(); id != "" {
		s += ":" + id
	}
	return dash(s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) auditVerify() *cobra.Command {
	var from, through uint64
	var trusted []string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Verify the hash chain and its signed checkpoints",
		Long: `Verify the retained chain: every event's hash, the links between events,
contiguous sequences, cleartexts against their digests, and the signed
checkpoints (a truncated tail is detected). Pass checkpoints you kept outside
mcpid with --trusted-checkpoint. Exit code 8 when the chain is broken.`,
		Example: "  mcpid audit verify\n  mcpid audit verify --from 1000 --through 2000\n  mcpid audit verify --trusted-checkpoint checkpoint.jws",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &auditv1.VerifyChainRequest{}
			if from > 0 || through > 0 {
				req.Range = &auditv1.VerifyChainRequest_SequenceRange{SequenceRange: &auditv1.SequenceRange{FromSequence: from, ThroughSequence: through}}
			}
			for _, p := range trusted {
				b, err := os.ReadFile(p)
				if err != nil {
					return usagef("reading --trusted-checkpoint: %v", err)
				}
				req.TrustedCheckpoints = append(req.TrustedCheckpoints, strings.TrimSpace(string(b)))
			}
			resp, err := call(cmd.Context(), a, svcAudit, "verifying the audit chain", req, func(c *grpc.ClientConn) func(context.Context, *auditv1.VerifyChainRequest, ...grpc.CallOption) (*auditv1.VerifyChainResponse, error) {
				return audClient(c).VerifyChain
			})
			if err != nil {
				return err
			}
			if err := a.out(resp, func(w io.Writer) error {
				state := "intact"
				if !resp.GetIntact() {
					state = "BROKEN"
				}
				pairs := []string{"chain", state, "checked", utoa(resp.GetFromSequence()) + ".." + utoa(resp.GetThroughSequence()),
					"events", utoa(resp.GetEventsChecked()), "checkpoints", itoa(int64(resp.GetCheckpointsChecked())),
					"erased values", utoa(resp.GetErasedValues()), "head", utoa(resp.GetHeadSequence()),
					"latest checkpoint", utoa(resp.GetLatestCheckpoint().GetSequence())}
				if b := resp.GetFirstBreak(); b != nil {
					pairs = append(pairs, "break", output.Enum(b.GetKind().String(), "CHAIN_BREAK_KIND_")+" at "+utoa(b.GetSequence()), "detail", b.GetDetail())
				}
				return output.KV(w, pairs...)
			}); err != nil {
				return err
			}
			if !resp.GetIntact() {
				return &negativeError{msg: "the audit chain is broken at sequence " + utoa(resp.GetFirstBreak().GetSequence())}
			}
			if !resp.GetComplete() {
				a.note("Stopped at the server's per-call limit: continue with --from %d.\n", resp.GetThroughSequence()+1)
			}
			return nil
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "first sequence (default: oldest retained)")
	cmd.Flags().Uint64Var(&through, "through", 0, "last sequence (default: head)")
	cmd.Flags().StringSliceVar(&trusted, "trusted-checkpoint", nil, "file holding a checkpoint JWS kept outside mcpid (repeatable)")
	return cmd
}

func (a *app) auditExport() *cobra.Command {
	var f eventFilterFlags
	var out string
	var from, through uint64
	var noProgress bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export retained events as JSON lines (with a progress bar)",
		Long: `Export retained events, oldest first, as JSON lines (one protobuf-JSON event
per line, with hashes, salts and digests so the export verifies offline) to
--out or stdout. A progress bar on stderr shows the sequence reached against
the chain head.`,
		Example: "  mcpid audit export --out audit.jsonl\n  mcpid audit export --type policy.decision --from 5000 > decisions.jsonl",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.filter()
			if err != nil {
				return err
			}
			w := a.d.Stdout
			if out != "" && out != "-" {
				file, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return usagef("--out: %v", err)
				}
				defer file.Close()
				w = file
			}
			req := &auditv1.QueryEventsRequest{Filter: filter, Order: auditv1.EventOrder_EVENT_ORDER_OLDEST_FIRST, PageSize: 1000}
			if from > 0 || through > 0 {
				req.SequenceRange = &auditv1.SequenceRange{FromSequence: from, ThroughSequence: through}
			}
			bar := newProgress(a.d.Stderr, !noProgress)
			var n int
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcAudit, "exporting the audit trail", req, func(c *grpc.ClientConn) func(context.Context, *auditv1.QueryEventsRequest, ...grpc.CallOption) (*auditv1.QueryEventsResponse, error) {
					return audClient(c).QueryEvents
				})
				if err != nil {
					bar.done()
					return err
				}
				for _, e := range resp.GetEvents() {
					b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
					if err != nil {
						return err
					}
					if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
						return err
					}
					n++
					bar.update(e.GetSequence(), resp.GetOldestRetainedSequence(), resp.GetHeadSequence(), n)
				}
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			bar.done()
			a.note("Exported %d events.\n", n)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&out, "out", "", "file to write (default stdout)")
	cmd.Flags().Uint64Var(&from, "from", 0, "first sequence (default: oldest retained)")
	cmd.Flags().Uint64Var(&through, "through", 0, "last sequence (default: head)")
	cmd.Flags().BoolVar(&noProgress, "no-progress", false, "do not draw the progress bar")
	return cmd
}

// progress draws a one-line progress bar on stderr.
type progress struct {
	w     io.Writer
	on    bool
	drawn bool
	last  int
}

func newProgress(w io.Writer, on bool) *progress { return &progress{w: w, on: on, last: -1} }

func (p *progress) update(seq, oldest, head uint64, n int) {
	if !p.on || head == 0 {
		return
	}
	span := head - min(oldest, head) + 1
	done := seq - min(oldest, seq) + 1
	pct := int(min(done*100/span, 100))
	if pct == p.last {
		return
	}
	p.last = pct
	const width = 30
	fill := pct * width / 100
	fmt.Fprintf(p.w, "\r[%s%s] %3d%%  %d events, sequence %d/%d", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, n, seq, head)
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func agentTable(w io.Writer, as []*auditv1.Agent) error {
	t := output.NewTable(w, "CLIENT ID", "NAME", "SOURCE", "STATUS", "STATE", "GRANTS", "ALLOW", "DENY", "LAST SEEN")
	for _, ag := range as {
		var grants uint32
		for _, g := range ag.GetGrants() {
			grants += g.GetGrantCount()
		}
		t.Row(ag.GetClientId(), ag.GetClientName(), output.Enum(ag.GetSource().String(), "AGENT_SOURCE_"),
			output.Enum(ag.GetVerificationStatus().String(), "AGENT_VERIFICATION_STATUS_"), output.Enum(ag.GetState().String(), "AGENT_STATE_"),
			itoa(int64(grants)), utoa(ag.GetActivity().GetAllowCount()), utoa(ag.GetActivity().GetDenyCount()), output.Time(ag.GetActivity().GetLastSeenTime()))
	}
	return t.Flush()
}

func (a *app) unavailable(srcs []auditv1.AgentDataSource) {
	for _, s := range srcs {
		a.note("warning: the %s service did not answer; its part of the inventory is stale or missing.\n", output.Enum(s.String(), "AGENT_DATA_SOURCE_"))
	}
}

func (a *app) agentsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "The agent inventory: who your agents are and what they can do",
		Long:    "The agent inventory: every client seen in the audit trail with its verification, scopes, grants and activity (allow/deny counts per resource and tool).",
	}
	var statuses, sources []string
	var activeSince, resource string
	var removed bool
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List agents",
		Long:    "List agents ordered by client id with verification status, grant count and allow/deny counts.",
		Example: "  mcpid agents list\n  mcpid agents list --status unverified --active-since 24h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &auditv1.ListAgentsRequest{PageSize: 200, IncludeRemoved: removed, Resource: resource, View: auditv1.AgentView_AGENT_VIEW_FULL}
			for _, s := range statuses {
				n, err := enumValue("status", s, "AGENT_VERIFICATION_STATUS_", auditv1.AgentVerificationStatus_value)
				if err != nil {
					return err
				}
				req.VerificationStatuses = append(req.VerificationStatuses, auditv1.AgentVerificationStatus(n))
			}
			for _, s := range sources {
				n, err := enumValue("source", s, "AGENT_SOURCE_", auditv1.AgentSource_value)
				if err != nil {
					return err
				}
				req.Sources = append(req.Sources, auditv1.AgentSource(n))
			}
			var err error
			if req.ActiveSince, err = parseSince("active-since", activeSince, a.d.Now()); err != nil {
				return err
			}
			var all []*auditv1.Agent
			for range maxPages {
				resp, err := call(cmd.Context(), a, svcAudit, "listing agents", req, func(c *grpc.ClientConn) func(context.Context, *auditv1.ListAgentsRequest, ...grpc.CallOption) (*auditv1.ListAgentsResponse, error) {
					return audClient(c).ListAgents
				})
				if err != nil {
					return err
				}
				a.unavailable(resp.GetUnavailableSources())
				all = append(all, resp.GetAgents()...)
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			return a.out(output.List(all), func(w io.Writer) error { return agentTable(w, all) })
		},
	}
	list.Flags().StringSliceVar(&statuses, "status", nil, "only agents with this verification status: verified, unverified, suspended (repeatable)")
	list.Flags().StringSliceVar(&sources, "source", nil, "only agents of this source: cimd, dcr, operator, pre-registered (repeatable)")
	list.Flags().StringVar(&activeSince, "active-since", "", "only agents active since (24h, or RFC 3339)")
	list.Flags().StringVar(&resource, "resource", "", "only agents that used this resource")
	list.Flags().BoolVar(&removed, "include-removed", false, "also deleted and expired clients")

	show := &cobra.Command{
		Use:     "show CLIENT_ID",
		Aliases: []string{"get"},
		Short:   "Show one agent: verification, scopes, grants, activity",
		Long:    "Show one agent in full: verification status, client_credentials allowances, grants per resource, and activity per resource and tool.",
		Example: "  mcpid agents show my-agent",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := call(cmd.Context(), a, svcAudit, "reading agent "+args[0], &auditv1.GetAgentRequest{ClientId: args[0], View: auditv1.AgentView_AGENT_VIEW_FULL}, func(c *grpc.ClientConn) func(context.Context, *auditv1.GetAgentRequest, ...grpc.CallOption) (*auditv1.GetAgentResponse, error) {
				return audClient(c).GetAgent
			})
			if err != nil {
				return err
			}
			a.unavailable(resp.GetUnavailableSources())
			ag := resp.GetAgent()
			return a.out(ag, func(w io.Writer) error {
				act := ag.GetActivity()
				if err := output.KV(w, "client id", ag.GetClientId(), "name", ag.GetClientName(),
					"source", output.Enum(ag.GetSource().String(), "AGENT_SOURCE_"),
					"verification", output.Enum(ag.GetVerificationStatus().String(), "AGENT_VERIFICATION_STATUS_"),
					"state", output.Enum(ag.GetState().String(), "AGENT_STATE_"),
					"registered", output.Time(ag.GetRegisterTime()),
					"first seen", output.Time(act.GetFirstSeenTime()), "last seen", output.Time(act.GetLastSeenTime()),
					"events", utoa(act.GetEventCount()), "allowed", utoa(act.GetAllowCount()), "denied", utoa(act.GetDenyCount())); err != nil {
					return err
				}
				fmt.Fprintln(w, "\nSCOPES AND GRANTS")
				t := output.NewTable(w, "RESOURCE", "KIND", "SCOPES", "GRANTS", "USERS", "LAST USED")
				for _, c := range ag.GetClientCredentialsAllowances() {
					t.Row(c.GetResource(), "client_credentials allowance", strings.Join(c.GetScopes(), " "), "", "", "")
				}
				for _, g := range ag.GetGrants() {
					t.Row(g.GetResource(), "grants", strings.Join(g.GetScopes(), " "), itoa(int64(g.GetGrantCount())), itoa(int64(g.GetUserCount())), output.Time(g.GetLastUsedTime()))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(w, "\nACTIVITY")
				t = output.NewTable(w, "RESOURCE", "TOOL", "ALLOW", "DENY", "LAST USED")
				for _, r := range act.GetResources() {
					t.Row(r.GetResource(), "*", utoa(r.GetAllowCount()), utoa(r.GetDenyCount()), output.Time(r.GetLastUsedTime()))
					for _, tl := range r.GetTools() {
						t.Row(r.GetResource(), tl.GetTool(), utoa(tl.GetAllowCount()), utoa(tl.GetDenyCount()), output.Time(tl.GetLastUsedTime()))
					}
				}
				return t.Flush()
			})
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}
