//! `canopy-manager`: the web console (a placeholder until the console lands).

fn main() {
    println!("canopy-manager: the console is not built yet");
}
