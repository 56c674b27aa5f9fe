package raft

import (
	"context"
	"sync/atomic"
)

// Proposal is a command appended to the leader's log, whose outcome is
// still to come. ProposeAsync returns it; Wait and Done give the outcome.
type Proposal struct {
	// Index and Term locate the entry in the log. If the entry at Index is
	// ever committed with this Term, the command was applied.
	Index, Term uint64

	data      []byte
	appendErr error         // why the leader refused the entry; set before appended closes
	appended  chan struct{} // closed once the leader appended the entry, or refused it
	done      chan struct{} // closed once result/err are final
	finished  atomic.Bool
	result    any
	err       error
	// waiting, once the leader appended the entry, is the Node's count of
	// the command bytes its proposals hold until they finish (see
	// Node.propBytes); finish takes this one's off.
	waiting *atomic.Int64
}

func newProposal(data []byte) *Proposal {
	return &Proposal{data: data, appended: make(chan struct{}), done: make(chan struct{})}
}

// finish sets the outcome; only the first call counts, and reports true.
func (p *Proposal) finish(result any, err error) bool {
	if p.finished.CompareAndSwap(false, true) {
		if p.waiting != nil {
			p.waiting.Add(-int64(len(p.data)))
		}
		p.result, p.err = result, err
		close(p.done)
		return true
	}
	return false
}

// Wait returns the StateMachine's Apply result for the command once it is
// committed and applied on this node. It fails with ErrLeadershipLost when
// this node lost leadership before the entry committed (the command may
// still commit later: its outcome is unknown), ErrClosed when the node
// closed first, ErrStopped (wrapping the cause) when it stopped after a
// fatal error, or the context's error when ctx ends first, in which case the
// proposal itself goes on.
func (p *Proposal) Wait(ctx context.Context) (any, error) {
	select {
	case <-p.done:
		return p.result, p.err
	default:
	}
	select {
	case <-p.done:
		return p.result, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Done returns a channel that is closed when Wait would not block.
func (p *Proposal) Done() <-chan struct{} { return p.done }

// readWait is one LinearizableRead in progress.
type readWait struct {
	id        uint64
	index     uint64
	ticks     int  // ticks since the request was last sent (follower retry)
	lease     bool // a LeaseRead: a read lease may answer it
	done      chan struct{}
	finished  atomic.Bool
	abandoned atomic.Bool // the caller's context ended; drop it
	err       error
}

func (r *readWait) finish(err error) {
	if r.finished.CompareAndSwap(false, true) {
		r.err = err
		close(r.done)
	}
}
