//! A minimal milter for the environment tests: protocol version 6, every
//! step, "continue" to everything; it records the macros it receives per
//! connection and stage (tests/postfix_env.rs, tests/postfix_sasl.rs).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Per milter connection, the macros received, in order, by stage letter.
pub type Seen = Arc<Mutex<Vec<Vec<(char, BTreeMap<String, String>)>>>>;

fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).ok()?;
    let cmd = *buf.first()?;
    Some((cmd, buf[1..].to_vec()))
}

fn write_packet(s: &mut TcpStream, cmd: u8, data: &[u8]) {
    let len = u32::try_from(data.len() + 1).unwrap();
    let mut out = len.to_be_bytes().to_vec();
    out.push(cmd);
    out.extend_from_slice(data);
    s.write_all(&out).unwrap();
}

pub fn recording_milter(seen: Seen) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let seen = seen.clone();
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(Vec::new());
                seen.len() - 1
            };
            std::thread::spawn(move || {
                while let Some((cmd, data)) = read_packet(&mut s) {
                    match cmd {
                        b'O' => {
                            // version 6, no actions, protocol flags 0: every
                            // callback, a reply to each.
                            let mut d = 6u32.to_be_bytes().to_vec();
                            d.extend_from_slice(&0u32.to_be_bytes());
                            d.extend_from_slice(&0u32.to_be_bytes());
                            write_packet(&mut s, b'O', &d);
                        }
                        b'D' => {
                            let stage = char::from(data[0]);
                            let mut fields = data[1..].split(|&b| b == 0);
                            let mut macros = BTreeMap::new();
                            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                                if !k.is_empty() {
                                    macros.insert(
                                        String::from_utf8_lossy(k).into_owned(),
                                        String::from_utf8_lossy(v).into_owned(),
                                    );
                                }
                            }
                            seen.lock().unwrap()[index].push((stage, macros));
                        }
                        b'A' | b'K' => {}
                        b'Q' => return,
                        _ => write_packet(&mut s, b'c', &[]),
                    }
                }
            });
        }
    });
    addr
}
