//! The device kernel, booted in QEMU in backend mode on the ivshmem topology, serves
//! a CBD host running natively on the same shared file: our host engine
//! (`host::engine`), attached by `boot::native_host::attach` (register, find the live
//! backend, dev-start, RESET handshake), runs a verified random READ/WRITE/FLUSH
//! workload on both channels. Then the blkdev stops and the device stops cleanly on
//! its console.

mod common;
use common::{Rng, now_ns};

use std::time::{Duration, Instant};

use device::layout::op;
use device::native::MmapMem;
use host::engine::{HostError, Request};
use qemu::device_vm::DeviceVm;
use qemu::status::KernelStatus;
use qemu::topology::{self, SharedFile};
use qemu::{Echo, Firmware, Input, Vm};

#[test]
fn device_kernel_serves_a_native_host_over_ivshmem() {
    serve_workload("ram", None);
}

/// The same with a virtio-blk disk as the device's media: afterwards the image file
/// holds exactly what the host wrote.
#[test]
fn device_kernel_stores_writes_on_its_virtio_disk() {
    let img = std::env::temp_dir().join(format!("cbdfw-test-media-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&img);
    qemu::topology::ensure_file(&img, 16 << 20).unwrap();
    let model = serve_workload("virtio", Some(&img));
    let on_disk = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    assert_eq!(on_disk.len(), model.len());
    assert!(
        on_disk == model,
        "the media image differs from what the host wrote"
    );
}

/// Run the verified workload; returns the model disk.
fn serve_workload(name: &str, media: Option<&std::path::Path>) -> Vec<u8> {
    let path = format!(
        "/dev/shm/cbdfw-test-serve-{name}-{}.raw",
        std::process::id()
    );
    let _ = std::fs::remove_file(&path);
    let size_mib = 512;
    let t = topology::load(
        "ivshmem",
        &SharedFile {
            path: path.clone().into(),
            size_mib,
        },
    )
    .unwrap();
    t.prepare_files().unwrap();
    let disk_mib = 16u64;
    let mut vm = DeviceVm::default()
        .option("mode", "backend")
        .option("disk-mib", &disk_mib.to_string())
        .option("channels", "2")
        .topology(t);
    vm.media = media.map(|p| p.to_path_buf());
    if media.is_some() {
        vm = vm.option("media", "virtio");
    }
    let img = boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image");
    let mut dev =
        Vm::spawn_with_input("device", &vm.command(&img), Echo::Quiet, Input::Piped).unwrap();
    assert!(
        dev.wait_for("serve: backend", Duration::from_secs(240)),
        "device never served:\n{}",
        dev.output()
    );

    let mem = MmapMem::create(path.as_ref(), size_mib << 20).unwrap();
    let mut blk = boot::native_host::attach(&mem, "native-test", 0).expect("attach the host");
    assert_eq!(blk.queues.len(), 2, "one queue per device channel");

    let disk = (disk_mib << 20) as usize;
    let mut model = vec![0u8; disk];
    let mut rng = Rng(0x5eed_cafe);
    let mut read_buf = vec![0u8; 1 << 20];
    let mut completed = 0u64;
    for i in 0..300u64 {
        let q = (i % 2) as usize;
        let kind = rng.next() % 10;
        let len = (((rng.next() % 128) + 1) * 512) as usize;
        let offset = ((rng.next() as usize % (disk - len)) / 512) * 512;
        let (req, payload) = match kind {
            0 => (
                Request {
                    op: op::FLUSH,
                    offset: 0,
                    len: 0,
                },
                Vec::new(),
            ),
            1..=5 => {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                (
                    Request {
                        op: op::WRITE,
                        offset: offset as u64,
                        len: len as u32,
                    },
                    data,
                )
            }
            _ => (
                Request {
                    op: op::READ,
                    offset: offset as u64,
                    len: len as u32,
                },
                Vec::new(),
            ),
        };
        let tid = loop {
            match blk.queues[q].submit(req, &payload) {
                Ok(t) => break t,
                Err(HostError::Busy) => std::thread::sleep(Duration::from_micros(100)),
                Err(e) => panic!("submit {req:?}: {e:?}"),
            }
        };
        let t1 = Instant::now();
        let c = loop {
            if let Some(c) = blk.queues[q].poll(&mut read_buf).expect("poll") {
                break c;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(60),
                "request {tid} never completed"
            );
            std::thread::yield_now();
        };
        assert_eq!((c.req_tid, c.result), (tid, 0), "completion of {req:?}");
        match req.op {
            op::WRITE => model[offset..offset + len].copy_from_slice(&payload),
            op::READ => assert!(
                read_buf[..len] == model[offset..offset + len],
                "READ {offset:#x}+{len:#x} returned wrong data"
            ),
            _ => {}
        }
        completed += 1;
        if i % 50 == 0 {
            blk.heartbeat(now_ns()).unwrap();
        }
    }
    blk.stop().expect("blkdev stop");
    dev.send_line("stop").unwrap();
    let out = dev.wait(qemu::pair::DEVICE_STOP_LIMIT);
    assert_eq!(
        out.status,
        KernelStatus::Success,
        "{}\n{}",
        out.status.describe(),
        out.output
    );
    let line = out
        .output
        .lines()
        .find(|l| l.contains("serve: stopped:"))
        .expect("summary line");
    let reqs: u64 = line
        .split("requests=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reqs >= completed,
        "device counted {reqs} requests, host completed {completed}"
    );
    assert!(line.contains("errors=0"), "{line}");
    let media_desc = if media.is_some() {
        "virtio-blk disk 16 MiB"
    } else {
        "RAM disk 16 MiB"
    };
    assert!(
        out.output.contains(media_desc),
        "device did not use its {media_desc}"
    );
    let _ = std::fs::remove_file(&path);
    model
}

/// `cargo run -- bench journal` end to end, shortened: both modes run on the device
/// kernel with its virtio disk, every write is confirmed durable and none is lost,
/// the device stops cleanly, and its write-back coalesced the sequential journal
/// writes (fewer media writes than writes written back). No figure is asserted.
#[test]
fn journal_bench_confirms_every_commit_on_the_device() {
    let img = boot::image::kernel_image_for_tests(Firmware::Bios).expect("kernel image");
    let mut b = boot::bench::journal::JournalBench::new();
    b.secs = 1.0;
    b.media = std::env::temp_dir().join(format!("cbdfw-test-journal-{}.img", std::process::id()));
    b.media_mib = 16;
    let r = boot::bench::journal::run(&img, &b);
    let _ = std::fs::remove_file(&b.media);
    let r = r.expect("journal bench");
    let text = r.text();
    assert!(r.result.fua.txns > 0 && r.result.tokens.txns > 0, "{text}");
    assert_eq!(r.tokens.lost, 0, "{text}");
    assert_eq!(r.tokens.confirmed, r.tokens.issued, "{text}");
    assert_eq!(
        r.tokens.issued,
        (r.result.fua.txns + r.result.tokens.txns) * (b.blocks + 1),
        "{text}"
    );
    assert!(r.device_stopped, "{text}");
    let field = |name: &str| -> u64 {
        let l = r
            .device_lines
            .iter()
            .find(|l| l.contains("serve: staging"))
            .expect(&text);
        let v = l.split(&format!("{name}: ")).nth(1).expect(&text);
        v.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (written_back, ios) = (field("written_back"), field("write_back_ios"));
    assert_eq!(written_back, r.tokens.issued, "{text}");
    assert!(ios > 0 && ios < written_back, "{text}");
}
