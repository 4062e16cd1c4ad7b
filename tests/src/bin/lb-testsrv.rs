//! Test backend: answers with its name so tests and the demo can see which
//! target served them. Listens on [::] (IPv4 and IPv6).
//!
//!   lb-testsrv --name b1 --tcp 8080 --udp 8080 --http 80
//!
//! TCP: writes "NAME\n", then echoes until EOF. PPV2: the same after a
//! PROXY protocol v2 header, answering "NAME client=ADDR\n". UDP: replies "NAME:" + the
//! datagram. HTTP: answers every GET with "NAME\n" (keep-alive aware).
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    thread,
};

/// Accepts connections on [::]:`port` and serves each, in a thread of its
/// own, with `conn` (given the server's name).
fn serve(name: String, port: u16, what: &str, conn: fn(&str, TcpStream)) {
    let l = TcpListener::bind(("::", port)).unwrap_or_else(|e| panic!("bind {what}: {e:?}"));
    for s in l.incoming().flatten() {
        let name = name.clone();
        thread::spawn(move || conn(&name, s));
    }
}

/// Echoes what arrives until EOF or an error.
fn echo(s: &mut TcpStream) {
    let mut buf = [0u8; 16384];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn tcp(name: String, port: u16) {
    serve(name, port, "tcp", |name, mut s| {
        if s.write_all(format!("{name}\n").as_bytes()).is_ok() {
            echo(&mut s);
        }
    });
}

/// Expects a PROXY protocol v2 header, then answers "NAME client=ADDR\n"
/// (the address from the header; with " tls=VERSION sni=NAME" when it has
/// PP2_TYPE_SSL and PP2_TYPE_AUTHORITY TLVs) and echoes like `tcp`.
fn ppv2(name: String, port: u16) {
    use lb_userspace::dataplane::proxy::ppv2;
    serve(name, port, "ppv2", |name, mut s| {
        let mut head = vec![0u8; 16];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let len = u16::from_be_bytes([head[14], head[15]]) as usize;
        head.resize(16 + len.min(1024), 0);
        if len > 1024 || s.read_exact(&mut head[16..]).is_err() {
            return;
        }
        let Some((client, _, _)) = ppv2::parse(&head) else {
            let _ = s.write_all(b"no proxy header\n");
            return;
        };
        let mut line = format!("{name} client={client}");
        let tlvs = ppv2::parse_tlvs(&head);
        let text = |ty: u8| {
            tlvs.iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        if let Some(v) = text(ppv2::PP2_SUBTYPE_SSL_VERSION) {
            line += &format!(" tls={v}");
        }
        if let Some(v) = text(ppv2::PP2_TYPE_AUTHORITY) {
            line += &format!(" sni={v}");
        }
        line.push('\n');
        if s.write_all(line.as_bytes()).is_ok() {
            echo(&mut s);
        }
    });
}

fn udp(name: String, port: u16) {
    let s = UdpSocket::bind(("::", port)).expect("bind udp");
    let mut buf = [0u8; 65536];
    while let Ok((n, from)) = s.recv_from(&mut buf) {
        let mut out = format!("{name}:").into_bytes();
        out.extend_from_slice(&buf[..n]);
        let _ = s.send_to(&out, from);
    }
}

fn http_conn(name: &str, s: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut s = s;
    loop {
        let mut close = false;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let http10 = line.contains("HTTP/1.0");
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let lower = h.to_ascii_lowercase();
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let body = format!("{name}\n");
        let conn = if close || http10 {
            "close"
        } else {
            "keep-alive"
        };
        write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}", body.len())?;
        if close || http10 {
            return Ok(());
        }
    }
}

fn http(name: String, port: u16) {
    serve(name, port, "http", |name, s| {
        let _ = http_conn(name, s);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut name = "backend".to_string();
    let mut threads = Vec::new();
    let mut i = 1;
    while i + 1 < args.len() {
        let v = args[i + 1].clone();
        match args[i].as_str() {
            "--name" => name = v,
            "--tcp" | "--udp" | "--http" | "--ppv2" => {
                let port: u16 = v.parse().expect("port");
                let n = name.clone();
                let f: fn(String, u16) = match args[i].as_str() {
                    "--tcp" => tcp,
                    "--udp" => udp,
                    "--ppv2" => ppv2,
                    _ => http,
                };
                threads.push(thread::spawn(move || f(n, port)));
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    for t in threads {
        let _ = t.join();
    }
}
