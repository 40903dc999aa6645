package npz

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

// Float32Writer streams one float32 array of a shape fixed in advance into
// a new .npz file, byte for byte as np.savez(path, key=array) writes it,
// so a large array (generated cells, batch after batch) never has to be in
// memory at once. Values arrive in row-major order through Write; Close
// checks that the array is complete, writes the ZIP directory and renames
// the file into place, so path never holds a partial file. Not safe for
// concurrent use.
type Float32Writer struct {
	path, tmp string
	f         *os.File
	bw        *bufio.Writer
	cw        *countingWriter
	e         zipEntry
	want, n   int64 // values expected and written
	buf       []byte
	err       error // sticky
	done      bool
}

// CreateFloat32 starts writing path with one member key.npy holding a
// float32 array of the given shape.
func CreateFloat32(path, key string, shape ...int) (*Float32Writer, error) {
	if key == "" || strings.ContainsAny(key, "/\\\x00") {
		return nil, fmt.Errorf("%s: npz key %q: keys must be non-empty and contain no slashes or NULs", path, key)
	}
	want := int64(1)
	for _, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("%s: npz key %q: negative dimension in shape %v", path, key, shape)
		}
		want *= int64(d)
	}
	tmp, err := atomicfile.TempName(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	w := &Float32Writer{path: path, tmp: tmp, f: f, want: want,
		e: zipEntry{name: key + ".npy", modTime: dosTime, modDate: dosDate}}
	// Local header with its ZIP64 extra field; sizes and CRC are patched
	// in Close (the header's length does not depend on them).
	if _, err := f.Write(localHeader(w.e)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: write npz: %w", path, err)
	}
	w.bw = bufio.NewWriterSize(f, 1<<16)
	w.cw = &countingWriter{w: w.bw}
	hdr := Header{Descr: "<f4", Shape: append([]int(nil), shape...)}
	if _, err := w.cw.Write(hdr.Encode()); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: write npz: %w", path, err)
	}
	return w, nil
}

// Write appends values (row-major) to the array. Writing more values than
// the shape holds is an error; after any error the writer is unusable.
func (w *Float32Writer) Write(v []float32) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return fmt.Errorf("%s: npz writer: Write after Close", w.path)
	}
	if w.n+int64(len(v)) > w.want {
		w.err = fmt.Errorf("%s: npz writer: %d values exceed the array's %d", w.path, w.n+int64(len(v)), w.want)
		return w.err
	}
	if cap(w.buf) < 4*len(v) {
		w.buf = make([]byte, 4*len(v))
	}
	b := w.buf[:4*len(v)]
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	if _, err := w.cw.Write(b); err != nil {
		w.err = fmt.Errorf("%s: write npz: %w", w.path, err)
		return w.err
	}
	w.n += int64(len(v))
	return nil
}

// Written is the number of values written so far.
func (w *Float32Writer) Written() int64 { return w.n }

// Close completes the file and renames it into place. An incomplete array
// or an earlier error discards the file and returns the error. Calling
// Close again returns nil.
func (w *Float32Writer) Close() error {
	if w.done {
		return nil
	}
	if w.err == nil && w.n != w.want {
		w.err = fmt.Errorf("%s: npz writer: closed after %d of %d values", w.path, w.n, w.want)
	}
	if w.err != nil {
		err := w.err
		w.Abort()
		return err
	}
	w.done = true
	err := w.finish()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(w.tmp)
		return fmt.Errorf("%s: write npz: %w", w.path, err)
	}
	return atomicfile.Commit(w.tmp, w.path, 0o644)
}

func (w *Float32Writer) finish() error {
	if err := w.bw.Flush(); err != nil {
		return err
	}
	w.e.crc, w.e.size = w.cw.crc, w.cw.n
	lh := localHeader(w.e)
	if _, err := w.f.WriteAt(lh, 0); err != nil {
		return err
	}
	if _, err := w.f.Seek(int64(len(lh))+int64(w.e.size), 0); err != nil {
		return err
	}
	if err := writeDirectory(w.f, []zipEntry{w.e}, uint64(len(lh))+w.e.size); err != nil {
		return err
	}
	return w.f.Sync()
}

// Abort discards the file being written. Idempotent.
func (w *Float32Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.err == nil {
		w.err = fmt.Errorf("%s: npz writer aborted", w.path)
	}
	err := w.f.Close()
	os.Remove(w.tmp)
	return err
}
