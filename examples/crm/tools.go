package crm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpid/mcpid/sdk/mcpguard"
)

// Contact is one CRM contact.
type Contact struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// Deal is one CRM deal.
type Deal struct {
	ID        string `json:"id"`
	Contact   string `json:"contact_id"`
	Stage     string `json:"stage"`
	UpdatedBy string `json:"updated_by,omitempty"`
}

// book is the in-memory CRM data.
type book struct {
	mu       sync.Mutex
	contacts []Contact
	deals    map[string]*Deal
}

func newBook() *book {
	return &book{
		contacts: []Contact{
			{ID: "c1", Name: "Ada Lovelace", Email: "ada@example.com"},
			{ID: "c2", Name: "Grace Hopper", Email: "grace@example.com"},
			{ID: "c3", Name: "Alan Turing", Email: "alan@example.com"},
		},
		deals: map[string]*Deal{
			"d1": {ID: "d1", Contact: "c1", Stage: "qualified"},
			"d2": {ID: "d2", Contact: "c2", Stage: "proposal"},
		},
	}
}

// ListContactsIn are list_contacts' arguments.
type ListContactsIn struct {
	Limit int `json:"limit,omitempty" jsonschema:"most contacts to return"`
}

// ListContactsOut is list_contacts' result.
type ListContactsOut struct {
	Contacts []Contact `json:"contacts"`
}

// UpdateDealIn are update_deal's arguments.
type UpdateDealIn struct {
	ID    string `json:"id" jsonschema:"deal id"`
	Stage string `json:"stage" jsonschema:"new stage: qualified, proposal, won or lost"`
}

// ExportContactsOut is export_contacts' result.
type ExportContactsOut struct {
	CSV string `json:"csv"`
}

var stages = []string{"qualified", "proposal", "won", "lost"}

func newMCPServer(b *book) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "acme-crm", Title: "Acme CRM", Version: Version}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "list_contacts", Description: "List contacts"},
		func(_ context.Context, _ *mcp.CallToolRequest, in ListContactsIn) (*mcp.CallToolResult, ListContactsOut, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			out := slices.Clone(b.contacts)
			if in.Limit > 0 && in.Limit < len(out) {
				out = out[:in.Limit]
			}
			return nil, ListContactsOut{Contacts: out}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "update_deal", Description: "Change a deal's stage", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true)}},
		func(_ context.Context, req *mcp.CallToolRequest, in UpdateDealIn) (*mcp.CallToolResult, Deal, error) {
			caller, ok := mcpguard.CallerFromRequest(req)
			if !ok {
				return nil, Deal{}, errors.New("no caller")
			}
			if !slices.Contains(stages, in.Stage) {
				return nil, Deal{}, fmt.Errorf("stage must be one of %s", strings.Join(stages, ", "))
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			d, ok := b.deals[in.ID]
			if !ok {
				return nil, Deal{}, fmt.Errorf("no deal %q", in.ID)
			}
			d.Stage, d.UpdatedBy = in.Stage, caller.Subject
			return nil, *d, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "export_contacts", Description: "Export every contact as CSV"},
		func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ExportContactsOut, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			var sb strings.Builder
			sb.WriteString("id,name,email\n")
			for _, c := range b.contacts {
				fmt.Fprintf(&sb, "%s,%s,%s\n", c.ID, c.Name, c.Email)
			}
			return nil, ExportContactsOut{CSV: sb.String()}, nil
		})
	return s
}

func ptr[T any](v T) *T { return &v }
