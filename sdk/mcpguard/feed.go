package mcpguard

import (
	"fmt"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/revocationfeed"
)

// feedRevocations adapts lib/revocationfeed's Follower (the token service's
// revocation feed for this resource) to Revocations.
type feedRevocations struct{ f *revocationfeed.Follower }

func (r feedRevocations) Ready() bool { return r.f.Ready() }

func (r feedRevocations) Revoked(t TokenRef) bool { return r.f.Revoked(revocationfeed.Token(t)) }

// newFeed builds the follower of this resource's revocation feed over conn
// (a connection to the token service authenticated as this MCP server: the
// service lets an MCP server read its own resource's feed only).
func newFeed(c Config) (*revocationfeed.Follower, error) {
	f, err := revocationfeed.New(revocationfeed.Config{
		Source:   tokenv1.NewTokenServiceClient(c.Token),
		Resource: c.Resource,
		Logger:   c.Logger,
		Now:      c.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("mcpguard: revocation feed: %w", err)
	}
	return f, nil
}
