//! The delivery queue: a bounded memory queue in front of a bounded on-disk spool.
//!
//! Order is global FIFO, hence per series: once anything is spooled, new points go to the
//! spool's tail too, and the memory queue refills from the spool's head. The spool is a
//! directory of segment files (`<id>.seg`, see [`record`] for the framing: each record
//! carries a CRC-32C); when it would exceed its cap the oldest segment is dropped and its
//! points counted. A segment loaded into memory is renamed `<id>.inflight` and removed once
//! memory has drained (every point of it written or refused), or at shutdown, after what is
//! still in memory has been written back as the new head segment. So a restart resumes
//! where this run stopped, and even after a crash nothing loaded is lost: `.inflight`
//! segments are read again (replayed points carry their version and overwrite themselves).
//!
//! Integrity and durability: a record that is torn (cut short by a crash) or damaged (its
//! checksum does not match) is counted and skipped, and reading resumes at the next intact
//! record. Every append is written and `fdatasync`ed before it returns (at most one append
//! per drain, so at most one sync per interval), and a new segment's directory entry is
//! synced too: what the spool accepted survives a power loss.

use std::{
    collections::VecDeque,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use super::point::Point;

/// Fresh spools start here, so that there is room below for head segments.
const FIRST_SEGMENT: u64 = 1 << 40;

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    points: u64,
    /// Read (and its damage counted) already.
    checked: bool,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    bytes: u64,
    points: u64,
    /// Segments loaded into memory, kept on disk until memory has drained.
    inflight: Vec<u64>,
    /// Damaged records skipped while reading segments.
    corrupt: u64,
    /// Holds an exclusive `flock` on `<dir>/lock`: one sidecar per spool.
    _lock: fs::File,
}

impl Spool {
    /// Opens (creating) the spool directory; returns it and the highest message id in it.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Spool, u64)> {
        fs::create_dir_all(dir)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        lock_exclusive(&lock)?;
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if let Some(id) = name.strip_suffix(".inflight") {
                    // Loaded by a run that did not finish: read it again.
                    let id = u64::from_str_radix(id, 16).ok()?;
                    fs::rename(e.path(), dir.join(format!("{id:016x}.seg"))).ok()?;
                    return Some(id);
                }
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(4 << 10, 4 << 20),
            segments: VecDeque::new(),
            bytes: 0,
            points: 0,
            inflight: Vec::new(),
            corrupt: 0,
            _lock: lock,
        };
        let mut max_id = 0;
        for id in ids {
            let points = spool.read_segment(id, true)?;
            if points.is_empty() {
                let _ = fs::remove_file(spool.path(id));
                continue;
            }
            max_id = points.iter().map(|p| p.message_id).fold(max_id, u64::max);
            let bytes = fs::metadata(spool.path(id))?.len();
            spool.bytes += bytes;
            spool.points += points.len() as u64;
            spool.segments.push_back(Segment {
                id,
                bytes,
                points: points.len() as u64,
                checked: true,
            });
        }
        Ok((spool, max_id))
    }

    /// Whether `dir` can hold the spool: a directory (created when missing) where this
    /// process can create, sync and remove a file, and that no other process locks. Checked
    /// at start-up, before anything is attached.
    pub fn check_dir(dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir).map_err(|err| annotate(err, "cannot create the directory"))?;
        if !fs::metadata(dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        let written = fs::File::create(&probe).and_then(|mut f| {
            f.write_all(b"probe")?;
            f.sync_all()
        });
        let _ = fs::remove_file(&probe);
        written.map_err(|err| annotate(err, "cannot write in the directory"))?;
        // Opening takes the lock; dropping the spool releases it.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        lock_exclusive(&lock)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.seg"))
    }

    /// The points of one segment; damaged records are skipped, and counted the first time
    /// the segment is read (at open for segments of earlier runs, else when loaded).
    fn read_segment(&mut self, id: u64, count_damage: bool) -> io::Result<Vec<Point>> {
        let data = fs::read(self.path(id))?;
        let decoded = record::decode_all(&data);
        if decoded.damaged > 0 && count_damage {
            tracing::warn!(
                segment = %self.path(id).display(),
                damaged = decoded.damaged,
                points = decoded.points.len(),
                "BanyanDB spool: skipped damaged records (torn or failing their checksum)"
            );
        }
        if count_damage {
            self.corrupt += decoded.damaged;
        }
        Ok(decoded.points)
    }

    /// Damaged records skipped so far (torn, or failing their checksum).
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt
    }

    fn encode(points: &[Point]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(record::HEADER.len() + points.len() * 112);
        for point in points {
            record::encode(point, &mut buf);
        }
        buf
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn points(&self) -> u64 {
        self.points
    }

    /// Appends at the tail; returns the points dropped (oldest first) to respect the cap.
    pub fn append(&mut self, points: &[Point]) -> io::Result<u64> {
        if points.is_empty() {
            return Ok(0);
        }
        let mut data = Self::encode(points);
        let roll = self
            .segments
            .back()
            .is_none_or(|tail| tail.bytes >= self.segment_bytes);
        if roll {
            let id = self.segments.back().map_or(FIRST_SEGMENT, |s| s.id + 1);
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                points: 0,
                checked: false,
            });
        }
        let tail = self.segments.back_mut().expect("just ensured");
        if tail.bytes == 0 {
            data.splice(0..0, record::HEADER.iter().copied());
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{:016x}.seg", tail.id)))?;
        file.write_all(&data)?;
        file.sync_data()?;
        if roll {
            sync_dir(&self.dir)?;
        }
        tail.bytes += data.len() as u64;
        tail.points += points.len() as u64;
        self.bytes += data.len() as u64;
        self.points += points.len() as u64;
        let mut dropped = 0;
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            let _ = fs::remove_file(self.path(oldest.id));
            self.bytes -= oldest.bytes;
            self.points -= oldest.points;
            dropped += oldest.points;
        }
        Ok(dropped)
    }

    /// Removes the head segment and returns its points.
    pub fn pop_head(&mut self) -> io::Result<Vec<Point>> {
        let Some(head) = self.segments.pop_front() else {
            return Ok(Vec::new());
        };
        let points = self.read_segment(head.id, !head.checked);
        let _ = fs::rename(self.path(head.id), self.inflight_path(head.id));
        self.inflight.push(head.id);
        self.bytes -= head.bytes;
        self.points -= head.points;
        points
    }

    fn inflight_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.inflight"))
    }

    /// Forgets the segments loaded into memory: their points are settled or rewritten.
    pub fn release_inflight(&mut self) {
        for id in std::mem::take(&mut self.inflight) {
            let _ = fs::remove_file(self.inflight_path(id));
        }
    }

    /// The points of the head segment without removing it (to size a refill).
    fn head_points(&self) -> Option<u64> {
        self.segments.front().map(|s| s.points)
    }

    /// Writes points in front of everything spooled (at shutdown).
    pub fn prepend(&mut self, points: &[Point]) -> io::Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        // Below the head and below anything in flight (never the id of a file on disk).
        let lowest = self
            .segments
            .front()
            .map(|s| s.id)
            .into_iter()
            .chain(self.inflight.iter().copied())
            .min();
        let id = lowest.map_or(FIRST_SEGMENT, |id| id.saturating_sub(1));
        let mut data = record::HEADER.to_vec();
        data.extend(Self::encode(points));
        let tmp = self.dir.join(format!("{id:016x}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&data)?;
        file.sync_all()?;
        fs::rename(&tmp, self.path(id))?;
        sync_dir(&self.dir)?;
        self.segments.push_front(Segment {
            id,
            bytes: data.len() as u64,
            points: points.len() as u64,
            checked: false,
        });
        self.bytes += data.len() as u64;
        self.points += points.len() as u64;
        Ok(())
    }
}

/// An exclusive `flock` on the spool's lock file: one sidecar per spool. Released when the
/// file is closed.
fn lock_exclusive(lock: &fs::File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "another process (a second sidecar?) uses this spool directory",
        ));
    }
    Ok(())
}

fn annotate(err: io::Error, what: &str) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Makes a directory's entries (a new or renamed segment) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The framing of spool records.
///
/// A segment starts with [`HEADER`]; each record is `MAGIC` (u32), the payload's length
/// (u32), a CRC-32C of the length and the payload (u32), all little-endian, then the payload
/// (an encoded [`Point`]). The magic lets a reader find the next record after damage; the
/// checksum tells a torn or corrupted record from an intact one. Segments without the header
/// were written by earlier versions: bare `len` + payload records, read as before.
pub mod record {
    use prost::Message as _;

    use super::Point;

    pub const HEADER: &[u8; 8] = b"SCSPOOL2";
    pub const MAGIC: u32 = 0x5243_4453; // "SDCR"
    const FRAME: usize = 12;
    /// Larger than any point the sidecar writes (a few hundred bytes): a length beyond it is
    /// damage, not a record.
    const MAX_PAYLOAD: usize = 1 << 20;

    pub fn encode(point: &Point, buf: &mut Vec<u8>) {
        let len = point.encoded_len() as u32;
        let start = buf.len();
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        point.encode(buf).expect("a Vec grows");
        let crc = checksum(&buf[start + 4..start + 8], &buf[start + FRAME..]);
        buf[start + 8..start + FRAME].copy_from_slice(&crc.to_le_bytes());
    }

    fn checksum(len: &[u8], payload: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(len), payload)
    }

    fn u32_at(data: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    }

    /// The intact record at `at`: its point and length in bytes.
    fn record_at(data: &[u8], at: usize) -> Option<(Point, usize)> {
        if u32_at(data, at)? != MAGIC {
            return None;
        }
        let len = u32_at(data, at + 4)? as usize;
        if len > MAX_PAYLOAD {
            return None;
        }
        let payload = data.get(at + FRAME..at + FRAME + len)?;
        if checksum(&data[at + 4..at + 8], payload) != u32_at(data, at + 8)? {
            return None;
        }
        Some((Point::decode(payload).ok()?, FRAME + len))
    }

    #[derive(Debug, Default)]
    pub struct Decoded {
        pub points: Vec<Point>,
        /// Damaged stretches skipped: each counts one damaged record.
        pub damaged: u64,
    }

    pub fn decode_all(data: &[u8]) -> Decoded {
        let Some(records) = data.strip_prefix(HEADER.as_slice()) else {
            return decode_legacy(data);
        };
        let mut decoded = Decoded::default();
        let mut at = 0;
        let mut in_damage = false;
        while at < records.len() {
            if let Some((point, len)) = record_at(records, at) {
                decoded.points.push(point);
                at += len;
                in_damage = false;
                continue;
            }
            if !in_damage {
                decoded.damaged += 1;
                in_damage = true;
            }
            at += 1;
        }
        decoded
    }

    /// Segments of earlier versions: no checksum, so the first record that does not decode
    /// ends the reading (and counts as damaged).
    fn decode_legacy(data: &[u8]) -> Decoded {
        let mut decoded = Decoded::default();
        let mut rest = data;
        while !rest.is_empty() {
            let record = u32_at(rest, 0)
                .map(|len| len as usize)
                .and_then(|len| Some((rest.get(4..4 + len)?, len)));
            match record.and_then(|(bytes, len)| Some((Point::decode(bytes).ok()?, len))) {
                Some((point, len)) => {
                    decoded.points.push(point);
                    rest = &rest[4 + len..];
                }
                None => {
                    decoded.damaged += 1;
                    break;
                }
            }
        }
        decoded
    }
}

/// Memory first, then the spool.
#[derive(Debug)]
pub struct Queue {
    memory: VecDeque<Point>,
    memory_cap: usize,
    spool: Spool,
}

impl Queue {
    pub fn new(spool: Spool, memory_cap: usize) -> Queue {
        Queue {
            memory: VecDeque::new(),
            memory_cap: memory_cap.max(1),
            spool,
        }
    }

    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.spool.points()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn memory_len(&self) -> usize {
        self.memory.len()
    }

    pub fn spool_bytes(&self) -> u64 {
        self.spool.bytes()
    }

    pub fn spool_corrupt_records(&self) -> u64 {
        self.spool.corrupt_records()
    }

    /// Queues newer points; returns how many old points the spool's cap dropped.
    pub fn push(&mut self, points: Vec<Point>) -> io::Result<u64> {
        if self.spool.is_empty() && self.memory.len() + points.len() <= self.memory_cap {
            self.memory.extend(points);
            return Ok(0);
        }
        self.spool.append(&points)
    }

    /// Takes up to `n` of the oldest points (refilling memory from the spool).
    pub fn take(&mut self, n: usize) -> io::Result<Vec<Point>> {
        while self.memory.len() < n
            && let Some(head) = self.spool.head_points()
        {
            // Memory stays within its cap plus one batch.
            if !self.memory.is_empty()
                && self.memory.len() as u64 + head > (self.memory_cap + n) as u64
            {
                break;
            }
            let points = self.spool.pop_head()?;
            self.memory.extend(points);
        }
        let n = n.min(self.memory.len());
        Ok(self.memory.drain(..n).collect())
    }

    /// Puts points that could not be delivered back in front, in their order.
    /// After a flush: once memory has drained, the segments it was loaded from go.
    pub fn settle(&mut self) {
        if self.memory.is_empty() {
            self.spool.release_inflight();
        }
    }

    pub fn put_back(&mut self, points: Vec<Point>) {
        for point in points.into_iter().rev() {
            self.memory.push_front(point);
        }
    }

    /// Moves what is in memory to the spool's head (at shutdown).
    pub fn persist(&mut self) -> io::Result<()> {
        let points: Vec<Point> = self.memory.drain(..).collect();
        if let Err(err) = self.spool.prepend(&points) {
            self.memory.extend(points);
            return Err(err);
        }
        self.spool.release_inflight();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: u64) -> Point {
        Point {
            module: 1,
            node: "n".to_owned(),
            workload: "w".to_owned(),
            timestamp_ms: id as i64,
            message_id: id,
            fields: vec![id as i64; 4],
        }
    }

    fn ids(points: &[Point]) -> Vec<u64> {
        points.iter().map(|p| p.message_id).collect()
    }

    #[test]
    fn fifo_across_memory_and_spool_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, max) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(max, 0);
        let mut queue = Queue::new(spool, 3);
        for id in 1..=10 {
            assert_eq!(queue.push(vec![point(id)]).unwrap(), 0);
        }
        assert_eq!(queue.memory_len(), 3);
        assert_eq!(queue.len(), 10);
        let batch = queue.take(2).unwrap();
        assert_eq!(ids(&batch), [1, 2]);
        queue.put_back(batch);
        // The spooled segment does not fit beside what memory holds: it waits.
        let batch = queue.take(4).unwrap();
        assert_eq!(ids(&batch), [1, 2, 3]);
        let batch = queue.take(4).unwrap();
        assert_eq!(ids(&batch), [4, 5, 6, 7]);
        queue.persist().unwrap();
        drop(queue);
        let (spool, max) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(max, 10);
        let mut queue = Queue::new(spool, 100);
        assert_eq!(queue.len(), 3);
        assert_eq!(ids(&queue.take(100).unwrap()), [8, 9, 10]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_crash_loses_nothing_loaded_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let mut queue = Queue::new(spool, 2);
        for id in 1..=6 {
            queue.push(vec![point(id)]).unwrap();
        }
        assert_eq!(ids(&queue.take(2).unwrap()), [1, 2]);
        queue.settle();
        // Loads the spooled segment (3..=6) into memory, then "crashes".
        assert_eq!(ids(&queue.take(1).unwrap()), [3]);
        drop(queue);
        let (spool, max) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(max, 6);
        let mut queue = Queue::new(spool, 100);
        assert_eq!(ids(&queue.take(100).unwrap()), [3, 4, 5, 6]);
        // Once memory has drained, the loaded segment goes.
        queue.settle();
        let files: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["lock"]);
        // One sidecar per spool.
        let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path(), 16 << 10).unwrap();
        let mut queue = Queue::new(spool, 1);
        let mut dropped = 0;
        for id in 1..=2000 {
            dropped += queue.push(vec![point(id)]).unwrap();
        }
        assert!(dropped > 0);
        assert!(queue.spool_bytes() <= 16 << 10);
        assert_eq!(queue.len() + dropped, 2000);
        let rest = queue.take(5000).unwrap();
        // The first stayed in memory; of the spooled, the newest survive, in order.
        assert_eq!(rest[0].message_id, 1);
        assert_eq!(rest.last().unwrap().message_id, 2000);
        assert!(
            rest[1..]
                .windows(2)
                .all(|w| w[0].message_id + 1 == w[1].message_id)
        );
    }

    /// One segment with points 1..=n, written by a spool and closed again.
    fn spool_with(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        let points: Vec<Point> = (1..=n).map(point).collect();
        spool.append(&points).unwrap();
        drop(spool);
        let segment = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        (dir, segment)
    }

    fn reopen(dir: &Path) -> (Vec<u64>, u64) {
        let (spool, _) = Spool::open(dir, 1 << 20).unwrap();
        let corrupt = spool.corrupt_records();
        let mut queue = Queue::new(spool, 1000);
        (ids(&queue.take(1000).unwrap()), corrupt)
    }

    #[test]
    fn a_torn_record_is_counted_and_the_rest_kept() {
        let (dir, segment) = spool_with(5);
        let data = fs::read(&segment).unwrap();
        // A crash in the middle of the last record.
        fs::write(&segment, &data[..data.len() - 7]).unwrap();
        assert_eq!(reopen(dir.path()), (vec![1, 2, 3, 4], 1));
    }

    #[test]
    fn a_flipped_bit_skips_one_record_and_delivers_the_ones_after_it() {
        let (dir, segment) = spool_with(5);
        let mut data = fs::read(&segment).unwrap();
        let record = (data.len() - record::HEADER.len()) / 5;
        // A bit inside the second record's payload.
        data[record::HEADER.len() + record + 14] ^= 0x10;
        fs::write(&segment, &data).unwrap();
        assert_eq!(reopen(dir.path()), (vec![1, 3, 4, 5], 1));

        // And one in a record's length field: the reader finds the next record all the same.
        let (dir, segment) = spool_with(5);
        let mut data = fs::read(&segment).unwrap();
        data[record::HEADER.len() + 2 * record + 5] ^= 0x40;
        fs::write(&segment, &data).unwrap();
        assert_eq!(reopen(dir.path()), (vec![1, 2, 4, 5], 1));
    }

    #[test]
    fn segments_of_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy = Vec::new();
        for id in 1..=3 {
            let point = point(id);
            legacy.extend_from_slice(&(prost::Message::encoded_len(&point) as u32).to_le_bytes());
            prost::Message::encode(&point, &mut legacy).unwrap();
        }
        fs::write(dir.path().join(format!("{FIRST_SEGMENT:016x}.seg")), legacy).unwrap();
        assert_eq!(reopen(dir.path()), (vec![1, 2, 3], 0));
    }
}
