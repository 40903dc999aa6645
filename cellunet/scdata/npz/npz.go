// Package npz reads and writes numpy .npy arrays and .npz archives as
// np.savez does: an uncompressed ZIP (method STORED) whose members
// "<key>.npy" hold NPY format 1.0 arrays (2.0 when a header needs it),
// with ZIP64 extra fields in the local headers (numpy opens members with
// force_zip64=True) and ZIP64 end records when the archive needs them.
// Reading also accepts np.savez_compressed (deflate) archives.
//
// Supported element types: float32 (<f4), float64 (<f8), int64 (<i8),
// int32 (<i4) and unicode strings (<U). Writes are atomic: a temporary file
// in the destination folder is synced and renamed.
package npz

import (
	"archive/zip"
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"

	"github.com/scdiffusion/gotorch-train/cgotorch/atomicfile"
)

// Named is an array with its key (the member name without ".npy").
type Named struct {
	Key   string // member name without ".npy"
	Array *Array // the array to write
}

// zip64Limit is Python zipfile's ZIP64_LIMIT (2^31 - 1): sizes and offsets
// above it go to ZIP64 fields.
const zip64Limit = 1<<31 - 1

// zipEntry is what the central directory needs about a member.
type zipEntry struct {
	name             string
	crc              uint32
	size, offset     uint64
	modTime, modDate uint16
}

// countingWriter counts bytes and feeds a CRC.
type countingWriter struct {
	w   io.Writer
	n   uint64
	crc uint32
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	c.crc = crc32.Update(c.crc, crc32.IEEETable, p[:n])
	return n, err
}

// numpy's members carry zipfile's default timestamp, 1980-01-01 00:00:00
// (DOS time 0, date 33), so np.savez output is deterministic; so is ours.
const (
	dosTime = 0
	dosDate = 1<<5 | 1
)

// Write writes the arrays to path as np.savez would (keys in the given
// order), atomically.
func Write(path string, arrays ...Named) error {
	seen := map[string]bool{}
	for _, a := range arrays {
		if a.Array == nil {
			return fmt.Errorf("%s: npz key %q: nil array", path, a.Key)
		}
		if a.Key == "" || strings.ContainsAny(a.Key, "/\\\x00") {
			return fmt.Errorf("%s: npz key %q: keys must be non-empty and contain no slashes or NULs", path, a.Key)
		}
		if seen[a.Key] {
			return fmt.Errorf("%s: npz key %q given twice", path, a.Key)
		}
		seen[a.Key] = true
		if err := a.Array.check(); err != nil {
			return fmt.Errorf("%s: npz key %q: %w", path, a.Key, err)
		}
	}
	tmp, err := atomicfile.TempName(path)
	if err != nil {
		return err
	}
	// writeZip seeks back to patch sizes, so it needs the file itself.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		err = writeZip(f, arrays)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: write npz: %w", path, err)
	}
	return atomicfile.Commit(tmp, path, 0o644)
}

func writeZip(f *os.File, arrays []Named) error {
	var entries []zipEntry
	offset := uint64(0)
	for _, a := range arrays {
		e := zipEntry{name: a.Key + ".npy", offset: offset, modTime: dosTime, modDate: dosDate}
		// Local header with a ZIP64 extra field (sizes patched afterwards).
		lh := localHeader(e)
		if _, err := f.Write(lh); err != nil {
			return err
		}
		bw := bufio.NewWriterSize(f, 1<<16)
		cw := &countingWriter{w: bw}
		if _, err := cw.Write(a.Array.header().Encode()); err != nil {
			return err
		}
		if err := a.Array.writeData(cw); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		e.crc, e.size = cw.crc, cw.n
		if _, err := f.WriteAt(localHeader(e), int64(offset)); err != nil {
			return err
		}
		offset += uint64(len(lh)) + e.size
		entries = append(entries, e)
	}
	if err := writeDirectory(f, entries, offset); err != nil {
		return err
	}
	return f.Sync()
}

// writeDirectory writes the central directory of entries, starting at
// archive offset cdStart, and the end records (ZIP64 ones when needed).
func writeDirectory(w io.Writer, entries []zipEntry, cdStart uint64) error {
	offset := cdStart
	bw := bufio.NewWriter(w)
	for _, e := range entries {
		cd := centralHeader(e)
		bw.Write(cd)
		offset += uint64(len(cd))
	}
	cdSize := offset - cdStart
	n := uint64(len(entries))
	if n > 0xFFFF || cdStart > zip64Limit || cdSize > zip64Limit {
		var b []byte
		b = binary.LittleEndian.AppendUint32(b, 0x06064b50)
		b = binary.LittleEndian.AppendUint64(b, 44)
		b = binary.LittleEndian.AppendUint16(b, 45)
		b = binary.LittleEndian.AppendUint16(b, 45)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint64(b, n)
		b = binary.LittleEndian.AppendUint64(b, n)
		b = binary.LittleEndian.AppendUint64(b, cdSize)
		b = binary.LittleEndian.AppendUint64(b, cdStart)
		b = binary.LittleEndian.AppendUint32(b, 0x07064b50)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint64(b, offset)
		b = binary.LittleEndian.AppendUint32(b, 1)
		bw.Write(b)
	}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0x06054b50)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(min(n, 0xFFFF)))
	b = binary.LittleEndian.AppendUint16(b, uint16(min(n, 0xFFFF)))
	b = binary.LittleEndian.AppendUint32(b, uint32(min(cdSize, 0xFFFFFFFF)))
	b = binary.LittleEndian.AppendUint32(b, uint32(min(cdStart, 0xFFFFFFFF)))
	b = binary.LittleEndian.AppendUint16(b, 0)
	bw.Write(b)
	return bw.Flush()
}

func nameFlags(name string) uint16 {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return 0x800 // UTF-8 name
		}
	}
	return 0
}

// localHeader builds a local file header with a ZIP64 extra field holding
// the sizes, as Python's zipfile writes with force_zip64=True: the 32-bit
// size fields hold the sizes (version 2.0) unless they exceed the ZIP64
// limit (then 0xFFFFFFFF, version 4.5).
func localHeader(e zipEntry) []byte {
	version, size32 := uint16(20), uint32(e.size)
	if e.size > zip64Limit {
		version, size32 = 45, 0xFFFFFFFF
	}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0x04034b50)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, nameFlags(e.name))
	b = binary.LittleEndian.AppendUint16(b, 0) // STORED
	b = binary.LittleEndian.AppendUint16(b, e.modTime)
	b = binary.LittleEndian.AppendUint16(b, e.modDate)
	b = binary.LittleEndian.AppendUint32(b, e.crc)
	b = binary.LittleEndian.AppendUint32(b, size32)
	b = binary.LittleEndian.AppendUint32(b, size32)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.name)))
	b = binary.LittleEndian.AppendUint16(b, 20)
	b = append(b, e.name...)
	b = binary.LittleEndian.AppendUint16(b, 1)
	b = binary.LittleEndian.AppendUint16(b, 16)
	b = binary.LittleEndian.AppendUint64(b, e.size)
	b = binary.LittleEndian.AppendUint64(b, e.size)
	return b
}

// centralHeader builds a central directory entry; ZIP64 fields only when
// a size or the offset needs them.
func centralHeader(e zipEntry) []byte {
	var extra []byte
	size32, off32 := uint32(e.size), uint32(e.offset)
	if e.size > zip64Limit {
		extra = binary.LittleEndian.AppendUint64(extra, e.size)
		extra = binary.LittleEndian.AppendUint64(extra, e.size)
		size32 = 0xFFFFFFFF
	}
	if e.offset > zip64Limit {
		extra = binary.LittleEndian.AppendUint64(extra, e.offset)
		off32 = 0xFFFFFFFF
	}
	version := uint16(20)
	if extra != nil {
		version = 45
		extra = append(binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(nil, 1), uint16(len(extra))), extra...)
	}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0x02014b50)
	b = binary.LittleEndian.AppendUint16(b, 3<<8|version) // made by: Unix
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, nameFlags(e.name))
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint16(b, e.modTime)
	b = binary.LittleEndian.AppendUint16(b, e.modDate)
	b = binary.LittleEndian.AppendUint32(b, e.crc)
	b = binary.LittleEndian.AppendUint32(b, size32)
	b = binary.LittleEndian.AppendUint32(b, size32)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.name)))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(extra)))
	b = binary.LittleEndian.AppendUint16(b, 0) // comment
	b = binary.LittleEndian.AppendUint16(b, 0) // disk
	b = binary.LittleEndian.AppendUint16(b, 0) // internal attributes
	b = binary.LittleEndian.AppendUint32(b, 0o600<<16)
	b = binary.LittleEndian.AppendUint32(b, off32)
	b = append(b, e.name...)
	return append(b, extra...)
}

// maxDeflateRatio bounds how much a deflated member may claim to expand.
const maxDeflateRatio = 1100

// Read reads every ".npy" member of an .npz file (stored or deflated) and
// returns them by key. Other members are ignored.
func Read(path string) (map[string]*Array, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		if errors.Is(err, zip.ErrFormat) {
			return nil, fmt.Errorf("%s: not a zip (.npz) file: %w", path, errors.Join(err, ErrFormat))
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer zr.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	out := map[string]*Array{}
	for _, m := range zr.File {
		if !strings.HasSuffix(m.Name, ".npy") {
			continue
		}
		key := strings.TrimSuffix(m.Name, ".npy")
		a, err := readMember(m, fi.Size())
		if err != nil {
			return nil, fmt.Errorf("%s: member %s: %w", path, m.Name, err)
		}
		out[key] = a
	}
	return out, nil
}

func readMember(m *zip.File, fileSize int64) (*Array, error) {
	size := m.UncompressedSize64
	switch m.Method {
	case zip.Store:
		if size != m.CompressedSize64 || size > uint64(fileSize) {
			return nil, fmt.Errorf("%w: stored member declares %d bytes (compressed %d, file %d)", ErrFormat, size, m.CompressedSize64, fileSize)
		}
	case zip.Deflate:
		if size > m.CompressedSize64*maxDeflateRatio+1<<20 {
			return nil, fmt.Errorf("%w: deflated member claims %d bytes from %d", ErrFormat, size, m.CompressedSize64)
		}
	default:
		return nil, fmt.Errorf("%w: compression method %d", ErrUnsupported, m.Method)
	}
	if size > 1<<62 {
		return nil, fmt.Errorf("%w: member size %d", ErrFormat, size)
	}
	rc, err := m.Open()
	if err != nil {
		return nil, errors.Join(err, ErrFormat)
	}
	defer rc.Close()
	a, err := ReadArray(rc, int64(size))
	if err != nil {
		return nil, err
	}
	// Reach EOF so archive/zip verifies the CRC.
	if n, err := io.Copy(io.Discard, rc); err != nil || n != 0 {
		return nil, fmt.Errorf("%w: after the array: %d extra bytes, %v", ErrFormat, n, err)
	}
	return a, nil
}
