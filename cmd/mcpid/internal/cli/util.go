package cli

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func utoa(n uint64) string { return strconv.FormatUint(n, 10) }

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func sortStrings(ss []string) []string {
	sort.Strings(ss)
	return ss
}

// parseSince accepts a duration ago ("10m") or an RFC 3339 time.
func parseSince(flag, v string, now time.Time) (*timestamppb.Timestamp, error) {
	if v == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, usagef("--%s %q: want a duration ago (10m, 24h) or an RFC 3339 time", flag, v)
	}
	return timestamppb.New(t), nil
}

func statusNotFound(msg string) *status.Status { return status.New(codes.NotFound, msg) }
