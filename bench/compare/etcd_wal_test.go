package compare

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// etcdWAL is the write-ahead log of the durable etcd harness: what
// an application of etcd raft would write without etcd's own wal package (an
// etcd server dependency). One append-only file per node; for each Ready, the
// HardState (if any) and then the Entries are appended as records in one
// write, and the file is fsynced (os.File.Sync) when Ready.MustSync says so,
// i.e. when there are entries or the term or vote changed; a change of the
// commit index alone is written but not synced, as etcd's wal does (a lost
// commit index is recomputed). The Ready loop does this before it sends the
// Ready's Messages and calls Advance. The raft.MemoryStorage stays the
// in-memory view raft reads from.
//
// A record is one byte of type, the uvarint length of the payload, then the
// payload: the proto encoding of a raftpb.HardState or raftpb.Entry. Replay
// (etcdReadWAL) keeps the last HardState, and an entry with index i replaces
// every entry from i on. There are no checksums: torn-write detection and
// recovery are outside what the benchmark needs (etcdReadWAL is only used by
// the test that checks the file holds the nodes' logs).
type etcdWAL struct {
	f   *os.File
	buf []byte
}

const (
	etcdRecHardState = 1
	etcdRecEntry     = 2
)

func openEtcdWAL(path string) (*etcdWAL, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &etcdWAL{f: f}, nil
}

// save appends hs (unless empty) and ents, and fsyncs if sync is set.
func (w *etcdWAL) save(hs *raftpb.HardState, ents []*raftpb.Entry, sync bool) error {
	if raft.IsEmptyHardState(hs) {
		hs = nil
	}
	if hs == nil && len(ents) == 0 {
		return nil
	}
	w.buf = w.buf[:0]
	var err error
	if hs != nil {
		if w.buf, err = appendEtcdRecord(w.buf, etcdRecHardState, hs); err != nil {
			return err
		}
	}
	for _, e := range ents {
		if w.buf, err = appendEtcdRecord(w.buf, etcdRecEntry, e); err != nil {
			return err
		}
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return err
	}
	if sync {
		return w.f.Sync()
	}
	return nil
}

func (w *etcdWAL) close() error { return w.f.Close() }

func appendEtcdRecord(buf []byte, typ byte, m proto.Message) ([]byte, error) {
	opts := proto.MarshalOptions{}
	buf = append(buf, typ)
	buf = binary.AppendUvarint(buf, uint64(opts.Size(m)))
	return opts.MarshalAppend(buf, m)
}

// etcdReadWAL replays the file at path: the last HardState and the log.
func etcdReadWAL(path string) (*raftpb.HardState, []*raftpb.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	hs := &raftpb.HardState{}
	var ents []*raftpb.Entry
	for {
		typ, err := r.ReadByte()
		if err == io.EOF {
			return hs, ents, nil
		}
		if err != nil {
			return nil, nil, err
		}
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: record length: %w", path, err)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return nil, nil, fmt.Errorf("%s: record payload: %w", path, err)
		}
		switch typ {
		case etcdRecHardState:
			hs = &raftpb.HardState{}
			if err := proto.Unmarshal(payload, hs); err != nil {
				return nil, nil, err
			}
		case etcdRecEntry:
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(payload, e); err != nil {
				return nil, nil, err
			}
			if len(ents) > 0 {
				first := ents[0].GetIndex()
				if e.GetIndex() < first || e.GetIndex() > first+uint64(len(ents)) {
					return nil, nil, fmt.Errorf("%s: entry %d does not follow the log [%d, %d]", path, e.GetIndex(), first, first+uint64(len(ents))-1)
				}
				ents = ents[:e.GetIndex()-first]
			}
			ents = append(ents, e)
		default:
			return nil, nil, errors.New(path + ": unknown record type")
		}
	}
}
