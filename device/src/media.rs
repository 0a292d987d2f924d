//! The backend's local storage, behind a trait so the kernel can plug in its
//! virtio-blk driver and tests a RAM disk.

/// Errors a media implementation reports; the engine turns them into `-EIO` CEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaError {
    Io,
    OutOfRange,
    Unsupported,
}

/// Names one asynchronous media request ([`Media::start_write`], [`Media::start_flush`])
/// until [`Media::poll_done`] reports its completion.
pub type Ticket = u32;

/// What [`Media::start_write`] / [`Media::start_flush`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// Done already (synchronous media): nothing will be reported for it.
    Done,
    /// In flight; [`Media::poll_done`] reports this ticket once it completed.
    InFlight(Ticket),
}

/// Byte-addressed block storage. The engine only calls it with ranges it has
/// validated against [`Media::size`], 512-byte aligned.
pub trait Media {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError>;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError>;
    /// Make every completed write durable.
    fn flush(&mut self) -> Result<(), MediaError>;
    /// Write zeroes (default: plain zero writes in 4 KiB pieces).
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        let zero = [0u8; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(4096) as usize;
            self.write(offset + done, &zero[..n])?;
            done += n as u64;
        }
        Ok(())
    }
    /// Discard (default: same as write_zeroes, so reads after discard return zeroes).
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        self.write_zeroes(offset, len)
    }
    /// The whole content, if the media is **volatile RAM** the device holds in its
    /// own address space (the kernel's RAM disk): it is gone when the device loses
    /// power, so nothing in front of it can be made more durable than it is. The
    /// engine then copies a WRITE's payload straight from the data area into these
    /// bytes and a READ's straight out of them (no staging, no scratch), and
    /// advertises `features::VOLATILE_MEDIA` (`docs/durability.md`, "Volatile
    /// media"). `None` (the default): media behind a driver, or memory that stands
    /// for non-volatile media (tests), which keeps the staging path.
    fn volatile_bytes(&mut self) -> Option<&mut [u8]> {
        None
    }

    // ---- Asynchronous write-back (`docs/durability.md`, "The write-back path").
    // Defaults: synchronous, every request is done when it is started.

    /// Can a request be started now ([`Media::start_write`], [`Media::start_flush`])?
    /// False while the media's request queue is full.
    fn can_start(&self) -> bool {
        true
    }
    /// Start writing `data` at `offset`. **Contract** (the caller's, since the media may
    /// hand `data`'s address to a DMA engine): the bytes of `data` stay where they are,
    /// unmodified and not reused for anything else, until [`Media::poll_done`] or
    /// [`Media::wait_done`] reported the ticket — the [`crate::durable::Stager`] keeps
    /// the staging slot and gives its buffer back only after every request it started
    /// completed. Requests in flight complete in any order: the caller orders writes
    /// to overlapping ranges (the later one is started after the earlier completed).
    fn start_write(&mut self, offset: u64, data: &[u8]) -> Result<Started, MediaError> {
        self.write(offset, data).map(|()| Started::Done)
    }
    /// Start a flush: every write that **completed** before it started is durable once
    /// it completes (writes still in flight are not covered).
    fn start_flush(&mut self) -> Result<Started, MediaError> {
        self.flush().map(|()| Started::Done)
    }
    /// A completed request, if one is there (non-blocking).
    fn poll_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        None
    }
    /// Wait for a completion (at least one request in flight). Default: [`Media::poll_done`].
    fn wait_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        self.poll_done()
    }
}

impl<T: Media + ?Sized> Media for &mut T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        (**self).read(offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        (**self).write(offset, data)
    }
    fn flush(&mut self) -> Result<(), MediaError> {
        (**self).flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        (**self).write_zeroes(offset, len)
    }
    fn discard(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        (**self).discard(offset, len)
    }
    fn volatile_bytes(&mut self) -> Option<&mut [u8]> {
        (**self).volatile_bytes()
    }
    fn can_start(&self) -> bool {
        (**self).can_start()
    }
    fn start_write(&mut self, offset: u64, data: &[u8]) -> Result<Started, MediaError> {
        (**self).start_write(offset, data)
    }
    fn start_flush(&mut self) -> Result<Started, MediaError> {
        (**self).start_flush()
    }
    fn poll_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        (**self).poll_done()
    }
    fn wait_done(&mut self) -> Option<(Ticket, Result<(), MediaError>)> {
        (**self).wait_done()
    }
}

/// A RAM disk over a caller-provided buffer (no allocation). By default it stands
/// for non-volatile media (tests stage in front of it); [`SliceMedia::volatile`] is
/// what it really is, the device's own RAM ([`Media::volatile_bytes`]).
pub struct SliceMedia<'a> {
    pub data: &'a mut [u8],
    pub flushes: u64,
    /// Report itself as volatile RAM ([`Media::volatile_bytes`]).
    pub volatile: bool,
}

impl<'a> SliceMedia<'a> {
    pub fn new(data: &'a mut [u8]) -> Self {
        Self {
            data,
            flushes: 0,
            volatile: false,
        }
    }
    /// The device's own RAM as its media: volatile, written in place.
    pub fn volatile(data: &'a mut [u8]) -> Self {
        Self {
            volatile: true,
            ..Self::new(data)
        }
    }
    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, MediaError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(MediaError::OutOfRange)?;
        if end > self.data.len() as u64 {
            return Err(MediaError::OutOfRange);
        }
        Ok(offset as usize..end as usize)
    }
}

impl Media for SliceMedia<'_> {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), MediaError> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), MediaError> {
        let r = self.range(offset, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), MediaError> {
        self.flushes += 1;
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), MediaError> {
        let r = self.range(offset, len as usize)?;
        self.data[r].fill(0);
        Ok(())
    }
    fn volatile_bytes(&mut self) -> Option<&mut [u8]> {
        self.volatile.then_some(&mut *self.data)
    }
}
