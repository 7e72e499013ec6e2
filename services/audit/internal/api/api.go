// Package api is the AuditService gRPC surface: each method checks who is
// calling beyond what the allowlist already decided (a service appends only
// as itself) and hands the request to the domain package that owns it.
package api

import (
	"context"
	"encoding/binary"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/mcpid/mcpid/gen/go/mcpid/audit/v1"
	"github.com/mcpid/mcpid/lib/principal"
	"github.com/mcpid/mcpid/services/audit/internal/checkpoint"
	"github.com/mcpid/mcpid/services/audit/internal/erasure"
	"github.com/mcpid/mcpid/services/audit/internal/errs"
	"github.com/mcpid/mcpid/services/audit/internal/ingest"
	"github.com/mcpid/mcpid/services/audit/internal/inventory"
	"github.com/mcpid/mcpid/services/audit/internal/pagetoken"
	"github.com/mcpid/mcpid/services/audit/internal/query"
	"github.com/mcpid/mcpid/services/audit/internal/store"
	"github.com/mcpid/mcpid/services/audit/internal/verify"
)

// Server implements auditv1.AuditServiceServer.
type Server struct {
	auditv1.UnimplementedAuditServiceServer

	Store     store.Store
	Appender  *ingest.Appender
	Querier   *query.Querier
	Verifier  *verify.Verifier
	Ring      *checkpoint.Ring
	Eraser    *erasure.Eraser
	Inventory *inventory.Reader
}

func notAllowed(what string) error {
	return errs.New(codes.PermissionDenied, auditv1.ErrorReason_ERROR_REASON_CALLER_NOT_ALLOWED, "%s", what)
}

// AppendEvents implements AuditService.
func (s *Server) AppendEvents(ctx context.Context, req *auditv1.AppendEventsRequest) (*auditv1.AppendEventsResponse, error) {
	p, _ := principal.FromContext(ctx)
	if p.Kind != principal.KindService {
		return nil, notAllowed("only mcpid services append events")
	}
	results, err := s.Appender.Append(ctx, p.ID, req.GetEvents())
	if err != nil {
		return nil, err
	}
	return &auditv1.AppendEventsResponse{Results: results}, nil
}

// QueryEvents implements AuditService.
func (s *Server) QueryEvents(ctx context.Context, req *auditv1.QueryEventsRequest) (*auditv1.QueryEventsResponse, error) {
	return s.Querier.Query(ctx, req)
}

// TailEvents implements AuditService.
func (s *Server) TailEvents(req *auditv1.TailEventsRequest, stream auditv1.AuditService_TailEventsServer) error {
	return s.Querier.Tail(stream.Context(), req, 0, stream.Send)
}

// VerifyChain implements AuditService.
func (s *Server) VerifyChain(ctx context.Context, req *auditv1.VerifyChainRequest) (*auditv1.VerifyChainResponse, error) {
	return s.Verifier.Verify(ctx, req)
}

// Checkpoint list limits.
const (
	defaultCheckpointPage = 100
	maxCheckpointPage     = 1000
	checkpointRead        = 200
	maxCheckpointScan     = 10_000
)

// ListCheckpoints implements AuditService.
func (s *Server) ListCheckpoints(ctx context.Context, req *auditv1.ListCheckpointsRequest) (*auditv1.ListCheckpointsResponse, error) {
	tr := req.GetTimeRange()
	if (tr.GetStartTime() != nil && tr.GetStartTime().CheckValid() != nil) || (tr.GetEndTime() != nil && tr.GetEndTime().CheckValid() != nil) {
		return nil, errs.Field("time_range", "not a valid timestamp")
	}
	if tr.GetStartTime() != nil && tr.GetEndTime() != nil && !tr.GetEndTime().AsTime().After(tr.GetStartTime().AsTime()) {
		return nil, errs.Field("time_range.end_time", "must be after start_time")
	}
	if req.GetPageSize() < 0 {
		return nil, errs.Field("page_size", "must not be negative")
	}
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultCheckpointPage
	case size > maxCheckpointPage:
		size = maxCheckpointPage
	}
	binding := pagetoken.Binding("checkpoints", req.GetTimeRange())
	through := uint64(0) // newest first: from the top
	if tok := req.GetPageToken(); tok != "" {
		c, err := pagetoken.Decode(binding, tok)
		if err != nil || len(c) != 8 || binary.BigEndian.Uint64(c) == 0 {
			return nil, errs.PageToken()
		}
		through = binary.BigEndian.Uint64(c)
	}
	resp := &auditv1.ListCheckpointsResponse{}
	for scanned := 0; scanned < maxCheckpointScan; {
		cps, err := s.Store.Checkpoints(ctx, 0, through, checkpointRead, true)
		if err != nil {
			return nil, errs.Store(err)
		}
		for _, cp := range cps {
			if len(resp.Checkpoints) == size {
				// The next page starts with this checkpoint.
				resp.NextPageToken = pagetoken.Encode(binding, binary.BigEndian.AppendUint64(nil, cp.Sequence))
				return resp, nil
			}
			scanned++
			if inRange(cp, tr) {
				resp.Checkpoints = append(resp.Checkpoints, checkpoint.ToProto(cp))
			}
			through = cp.Sequence - 1
		}
		if len(cps) < checkpointRead || through == 0 {
			return resp, nil
		}
	}
	if through > 0 {
		resp.NextPageToken = pagetoken.Encode(binding, binary.BigEndian.AppendUint64(nil, through))
	}
	return resp, nil
}

func inRange(cp store.CheckpointRecord, tr *auditv1.TimeRange) bool {
	if s := tr.GetStartTime(); s != nil && cp.SignTime.Before(s.AsTime()) {
		return false
	}
	if e := tr.GetEndTime(); e != nil && !cp.SignTime.Before(e.AsTime()) {
		return false
	}
	return true
}

// GetCheckpoint implements AuditService.
func (s *Server) GetCheckpoint(ctx context.Context, req *auditv1.GetCheckpointRequest) (*auditv1.GetCheckpointResponse, error) {
	var cp store.CheckpointRecord
	var err error
	if req.GetSequence() == 0 {
		cp, err = s.Store.LatestCheckpoint(ctx)
	} else {
		cp, err = s.Store.Checkpoint(ctx, req.GetSequence())
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, errs.New(codes.NotFound, auditv1.ErrorReason_ERROR_REASON_CHECKPOINT_NOT_FOUND, "no checkpoint at that sequence")
	}
	if err != nil {
		return nil, errs.Store(err)
	}
	return &auditv1.GetCheckpointResponse{Checkpoint: checkpoint.ToProto(cp)}, nil
}

// GetCheckpointKeys implements AuditService.
func (s *Server) GetCheckpointKeys(ctx context.Context, _ *auditv1.GetCheckpointKeysRequest) (*auditv1.GetCheckpointKeysResponse, error) {
	uses, err := checkpoint.KeyUses(ctx, s.Store)
	if err != nil {
		return nil, errs.Store(err)
	}
	resp := &auditv1.GetCheckpointKeysResponse{}
	var jwks []any
	for _, k := range s.Ring.Keys() {
		var first, last *timestamppb.Timestamp
		if u, ok := uses[k.KeyID]; ok {
			first, last = timestamppb.New(u.First), timestamppb.New(u.Last)
		}
		pk, err := checkpoint.KeyProto(k, first, last)
		if err != nil {
			return nil, err
		}
		resp.Keys = append(resp.Keys, pk)
		jwk := map[string]any{}
		for name, v := range k.JWK {
			jwk[name] = v
		}
		jwks = append(jwks, jwk)
	}
	set, err := structpb.NewStruct(map[string]any{"keys": jwks})
	if err != nil {
		return nil, err
	}
	resp.Jwks = set
	return resp, nil
}

// ErasePersonalData implements AuditService.
func (s *Server) ErasePersonalData(ctx context.Context, req *auditv1.ErasePersonalDataRequest) (*auditv1.ErasePersonalDataResponse, error) {
	p, _ := principal.FromContext(ctx)
	if !p.HasRole(principal.RoleAdmin) {
		return nil, notAllowed("erasure needs the admin role")
	}
	return s.Eraser.Erase(ctx, req, p.ID)
}

// ListAgents implements AuditService.
func (s *Server) ListAgents(ctx context.Context, req *auditv1.ListAgentsRequest) (*auditv1.ListAgentsResponse, error) {
	return s.Inventory.List(ctx, req)
}

// GetAgent implements AuditService.
func (s *Server) GetAgent(ctx context.Context, req *auditv1.GetAgentRequest) (*auditv1.GetAgentResponse, error) {
	return s.Inventory.Get(ctx, req)
}
