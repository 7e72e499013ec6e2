package server

import (
	"context"
	"fmt"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/revocationfeed"
	"github.com/mcpid/mcpid/lib/service"
	"github.com/mcpid/mcpid/services/policy/internal/tokens"
)

// followRevocations dials the token service (mTLS as the policy service) and
// follows its whole revocation feed (every resource) into feed.
func (c Config) followRevocations(b *service.Base, feed *tokens.FeedRevocations) (func(context.Context) error, error) {
	conn, err := b.Dial(c.TokenAddr, "token")
	if err != nil {
		return nil, fmt.Errorf("setting token-addr: %w", err)
	}
	f, err := revocationfeed.New(revocationfeed.Config{
		Source: tokenv1.NewTokenServiceClient(conn), MaxSilence: c.RevocationMaxSilence, Logger: b.Logger, Now: c.Now,
	})
	if err != nil {
		return nil, err
	}
	feed.Set(f)
	return f.Run, nil
}
