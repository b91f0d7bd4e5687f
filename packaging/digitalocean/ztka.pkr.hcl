# Packer template for the ztka 1-click droplet image (DigitalOcean Marketplace).
#
#   cargo deb                                   # builds target/debian/ztka_<version>-1_amd64.deb
#   packer init packaging/digitalocean
#   DIGITALOCEAN_TOKEN=... packer build \
#     -var deb=target/debian/ztka_0.1.0-1_amd64.deb packaging/digitalocean
#
# See README.md beside this file for publishing the snapshot.

packer {
  required_plugins {
    digitalocean = {
      version = ">= 1.4.0"
      source  = "github.com/digitalocean/digitalocean"
    }
  }
}

variable "do_token" {
  type        = string
  sensitive   = true
  default     = env("DIGITALOCEAN_TOKEN")
  description = "API token with write access (read from DIGITALOCEAN_TOKEN)."
}

variable "deb" {
  type        = string
  description = "Path of the ztka .deb to install (built with `cargo deb`)."
}

variable "ztka_version" {
  type    = string
  default = "0.1.0"
}

variable "base_image" {
  type        = string
  default     = "ubuntu-24-04-x64"
  description = "An Ubuntu LTS image slug."
}

variable "region" {
  type    = string
  default = "nyc3"
}

variable "size" {
  type        = string
  default     = "s-1vcpu-1gb"
  description = "The smallest size the image is meant for: snapshots fit droplets this size or larger."
}

locals {
  snapshot_name = "ztka-${var.ztka_version}-${formatdate("YYYYMMDD-hhmm", timestamp())}"
}

source "digitalocean" "ztka" {
  api_token     = var.do_token
  image         = var.base_image
  region        = var.region
  size          = var.size
  ssh_username  = "root"
  snapshot_name = local.snapshot_name
  tags          = ["ztka-image-build"]
}

build {
  sources = ["source.digitalocean.ztka"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/ztka.deb"
  }

  provisioner "file" {
    source      = "${path.root}/files/first-boot"
    destination = "/tmp/ztka-first-boot"
  }

  provisioner "file" {
    source      = "${path.root}/files/ztka-first-boot.service"
    destination = "/tmp/ztka-first-boot.service"
  }

  provisioner "shell" {
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    scripts = [
      "${path.root}/scripts/10-install.sh",
      "${path.root}/scripts/20-firewall.sh",
      "${path.root}/scripts/90-cleanup.sh",
      "${path.root}/scripts/99-image-check.sh",
    ]
  }
}
