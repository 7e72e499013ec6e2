package grpcapi

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	tokenv1 "github.com/mcpid/mcpid/gen/go/mcpid/token/v1"
	"github.com/mcpid/mcpid/lib/apierr"
	"github.com/mcpid/mcpid/lib/devca"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/token/internal/revocation"
	"github.com/mcpid/mcpid/services/token/internal/store"
)

// feedResource checks the resource filter against the caller: an MCP server
// must name its own resource; the policy service and operators may name any
// or none; other services only urn:mcpid:admin.
// Besides resource URIs the filter may be exactly urn:mcpid:admin: the
// services that verify operator tokens follow only what concerns them.
func feedResource(ctx context.Context, raw string) (string, error) {
	p, _ := principal.FromContext(ctx)
	if raw == principal.AdminAudience && p.Kind != principal.KindMCPServer {
		return raw, nil
	}
	// Registration and audit follow the feed only to refuse revoked
	// operator logins: they get nothing else (least privilege).
	if p.Kind == principal.KindService && p.ID != devca.ServicePolicy {
		return "", apierr.New(codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH.String(),
			"this service may only follow the revocations of "+principal.AdminAudience)
	}
	res, err := canonicalField("resource", raw)
	if err != nil {
		return "", err
	}
	if p.Kind == principal.KindMCPServer && (res == "" || res != p.Resource) {
		return "", apierr.New(codes.PermissionDenied, tokenv1.ErrorReason_ERROR_REASON_CALLER_RESOURCE_MISMATCH.String(),
			"an MCP server may only follow the revocations of its own resource")
	}
	return res, nil
}

func feedErr(err error) error {
	switch {
	case errors.Is(err, revocation.ErrCompacted):
		return apierr.New(codes.OutOfRange, tokenv1.ErrorReason_ERROR_REASON_REVISION_COMPACTED.String(),
			"the revision is compacted; list again").WithCause(err)
	case errors.Is(err, revocation.ErrAhead):
		return apierr.New(codes.OutOfRange, tokenv1.ErrorReason_ERROR_REASON_REVISION_AHEAD.String(),
			"the start revision is ahead of the store; list again").WithCause(err)
	case errors.Is(err, revocation.ErrInvalidPageToken):
		return apierr.New(codes.InvalidArgument, apierr.ReasonPageTokenInvalid, "page_token is invalid")
	case errors.Is(err, revocation.ErrWatchLost), store.IsUnavailable(err):
		return apierr.New(codes.Unavailable, tokenv1.ErrorReason_ERROR_REASON_STORE_UNAVAILABLE.String(),
			"the revocation feed is temporarily unavailable; resume from the last revision").WithCause(err)
	}
	return err
}

func (s *Server) feed() (*revocation.Feed, error) {
	if s.lifecycle.Feed == nil {
		return nil, apierr.New(codes.Unimplemented, apierr.ReasonInternal, "the revocation feed is not configured")
	}
	return s.lifecycle.Feed, nil
}

// ListRevocations implements tokenv1.TokenServiceServer.
func (s *Server) ListRevocations(ctx context.Context, req *tokenv1.ListRevocationsRequest) (*tokenv1.ListRevocationsResponse, error) {
	f, err := s.feed()
	if err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, invalidField("page_size", "page_size must not be negative")
	}
	res, err := feedResource(ctx, req.GetResource())
	if err != nil {
		return nil, err
	}
	entries, rev, next, err := f.List(ctx, res, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, feedErr(err)
	}
	return &tokenv1.ListRevocationsResponse{Revocations: entries, Revision: rev, NextPageToken: next}, nil
}

// WatchRevocations implements tokenv1.TokenServiceServer.
func (s *Server) WatchRevocations(req *tokenv1.WatchRevocationsRequest, stream grpc.ServerStreamingServer[tokenv1.WatchRevocationsResponse]) error {
	f, err := s.feed()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	res, err := feedResource(ctx, req.GetResource())
	if err != nil {
		return err
	}
	if req.GetStartRevision() < 0 {
		return invalidField("start_revision", "start_revision must not be negative")
	}
	err = f.Watch(ctx, req.GetStartRevision(), res, stream.Send)
	if err != nil && ctx.Err() != nil {
		return nil // the follower went away
	}
	if err != nil {
		return feedErr(err)
	}
	return nil
}
